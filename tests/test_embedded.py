"""The embedded PostgreSQL and Redis: start, reuse, stop, persistence and the `run --` CLI.

These start real servers in a private data directory on free ports; no Django involved.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from config import embedded

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import os, sys
import psycopg, redis
print("DATABASE_URL=" + os.environ["DATABASE_URL"])
print("REDIS_URL=" + os.environ["REDIS_URL"])
if os.environ.get("CHILD_CONNECTS"):
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert redis.Redis.from_url(os.environ["REDIS_URL"]).ping()
sys.exit(int(os.environ.get("CHILD_EXIT", "0")))
"""


def _free_ports(count: int) -> list[int]:
    """Distinct ports that are free right now (all bound at once so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private data root and ports; whatever is left running is stopped afterwards."""
    # Short and under /tmp: the unix socket path must fit and the pgserver user must reach it.
    path = Path(tempfile.mkdtemp(prefix="emb-", dir="/tmp"))
    pg_port, redis_port = _free_ports(2)
    monkeypatch.setenv("EMBEDDED_DATA_DIR", str(path))
    monkeypatch.setenv("EMBEDDED_PG_PORT", str(pg_port))
    monkeypatch.setenv("EMBEDDED_REDIS_PORT", str(redis_port))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    yield path
    embedded.stop_redis()
    embedded.stop_postgres()
    shutil.rmtree(path, ignore_errors=True)


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m config.embedded ARGS` with extra environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "config.embedded", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


def _assert_reused_stopped_and_restarted(ensure, running, stop, url: str) -> None:
    """Another `ensure` reuses the running server; `stop` stops it, once; `ensure` then
    starts it again at the same URL."""
    assert ensure() == (url, False)
    assert running() == url

    assert stop()
    assert running() is None
    assert not stop()

    assert ensure() == (url, True)


def test_nothing_runs_in_a_fresh_data_dir(data_dir: Path) -> None:
    assert embedded.running_database_url() is None
    assert embedded.running_redis_url() is None
    assert not (data_dir / "postgres").exists()


def test_redis_start_reuse_stop_and_persistence(data_dir: Path) -> None:
    url, started = embedded.ensure_redis()
    assert started
    assert url == f"redis://127.0.0.1:{os.environ['EMBEDDED_REDIS_PORT']}/0"
    client = redis.Redis.from_url(url)
    assert client.ping()
    client.set("embedded-test", "kept")

    _assert_reused_stopped_and_restarted(
        embedded.ensure_redis, embedded.running_redis_url, embedded.stop_redis, url
    )
    assert redis.Redis.from_url(url).get("embedded-test") == b"kept"


def test_postgres_start_reuse_stop_and_persistence(data_dir: Path) -> None:
    url, started = embedded.ensure_postgres()
    assert started
    assert url == f"postgres://postgres@127.0.0.1:{os.environ['EMBEDDED_PG_PORT']}/carbon"
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        query = "select count(*) from pg_database where datname = 'carbon'"
        assert conn.execute(query).fetchone() == (1,)
        conn.execute("create table kept (value text)")
        conn.execute("insert into kept values ('across restarts')")

    _assert_reused_stopped_and_restarted(
        embedded.ensure_postgres, embedded.running_database_url, embedded.stop_postgres, url
    )
    with psycopg.connect(url) as conn:
        assert conn.execute("select value from kept").fetchall() == [("across restarts",)]


def test_run_gives_urls_propagates_exit_code_and_stops_what_it_started(data_dir: Path) -> None:
    result = _cli(
        "run", "--", sys.executable, "-c", CHILD, CHILD_CONNECTS="1", CHILD_EXIT="7"
    )  # fmt: skip

    assert result.returncode == 7, result.stderr
    pg_port, redis_port = os.environ["EMBEDDED_PG_PORT"], os.environ["EMBEDDED_REDIS_PORT"]
    assert f"DATABASE_URL=postgres://postgres@127.0.0.1:{pg_port}/carbon" in result.stdout
    assert f"REDIS_URL=redis://127.0.0.1:{redis_port}/0" in result.stdout
    assert embedded.running_database_url() is None
    assert embedded.running_redis_url() is None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_forwards_signals_to_the_child(data_dir: Path, signum: int) -> None:
    child = (
        "import signal, sys, time\n"
        f"signal.signal({int(signum)}, lambda *_: sys.exit(42))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    command = [sys.executable, "-m", "config.embedded", "run", "--", sys.executable, "-c", child]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) as runner:
        assert runner.stdout is not None
        assert runner.stdout.readline() == "ready\n"
        runner.send_signal(signum)
        assert runner.wait(timeout=60) == 42
    assert embedded.running_database_url() is None
    assert embedded.running_redis_url() is None


def test_run_leaves_reused_servers_running(data_dir: Path) -> None:
    redis_url, _ = embedded.ensure_redis()

    result = _cli("run", "--", sys.executable, "-c", CHILD, CHILD_CONNECTS="1")

    assert result.returncode == 0, result.stderr
    assert f"REDIS_URL={redis_url}" in result.stdout
    assert embedded.running_redis_url() == redis_url
    assert embedded.running_database_url() is None


def test_run_with_urls_set_starts_nothing(data_dir: Path) -> None:
    given = {"DATABASE_URL": "postgres://elsewhere/db", "REDIS_URL": "redis://elsewhere/1"}

    result = _cli("run", "--", sys.executable, "-c", CHILD, CHILD_EXIT="3", **given)

    assert result.returncode == 3, result.stderr
    assert "DATABASE_URL=postgres://elsewhere/db" in result.stdout
    assert "REDIS_URL=redis://elsewhere/1" in result.stdout
    assert not (data_dir / "postgres").exists()
    assert not (data_dir / "redis").exists()


def test_start_status_stop_commands(data_dir: Path) -> None:
    started = _cli("start")
    assert started.returncode == 0, started.stderr
    database_url = embedded.running_database_url()
    redis_url = embedded.running_redis_url()
    assert database_url and redis_url
    assert started.stdout.splitlines() == [
        f"export DATABASE_URL={database_url}",
        f"export REDIS_URL={redis_url}",
    ]

    status = _cli("status")
    assert f"postgres: running at {database_url}" in status.stdout
    assert f"redis: running at {redis_url}" in status.stdout

    assert _cli("stop").returncode == 0
    assert embedded.running_database_url() is None
    assert embedded.running_redis_url() is None
    assert "postgres: stopped" in _cli("status").stdout


def test_bad_usage_exits_2() -> None:
    assert embedded.main([]) == 2
    assert embedded.main(["run", "--"]) == 2
    assert embedded.main(["frobnicate"]) == 2
