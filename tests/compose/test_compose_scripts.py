"""The shell scripts docker-compose.yml runs in its PostgreSQL and Sentinel containers,
run here for real on loopback with the same server binaries: the primary's init script
makes a replication role, the replica's start script makes a streaming hot standby of
it, and a sentinel started by its script watches a master."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
import redis

from tests.faults.private_servers import PrivatePostgres, PrivateRedis, pg_bin_dir, process_alive
from tests.live.conftest import REPO, free_port

SCRIPTS = REPO / "config" / "compose"

pytestmark = pytest.mark.timeout(120)


def until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s")


def test_sentinel_start_script_watches_the_master(tmp_path):
    master = PrivateRedis(tmp_path)
    master.start()
    directory = tmp_path / "sentinel"
    directory.mkdir()
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "SENTINEL_DIR": str(directory),
        "SENTINEL_PORT": str(port),
        "SENTINEL_BIND": "127.0.0.1",
        "REDIS_MASTER_HOST": "127.0.0.1",
        "REDIS_MASTER_PORT": str(master.port),
        "REDIS_SENTINEL_MASTER": "carbon",
    }
    sentinel = subprocess.Popen(
        ["sh", str(SCRIPTS / "sentinel-start.sh")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

        def master_address():
            try:
                return client.execute_command("SENTINEL", "get-master-addr-by-name", "carbon")
            except redis.ConnectionError:
                return None

        address = until(master_address, 15, "the sentinel answered")
        assert [part.decode() if isinstance(part, bytes) else part for part in address] == [
            "127.0.0.1",
            str(master.port),
        ]
        # The sentinel rewrote its copy (its id, the master's state), not a read-only file.
        written = (directory / "sentinel.conf").read_text()
        assert "sentinel myid" in written
        client.close()
    finally:
        sentinel.terminate()
        sentinel.wait(timeout=10)
        master.kill()


@pytest.fixture
def primary():
    bin_dir = pg_bin_dir()
    assert bin_dir is not None, "no PostgreSQL binaries (Debian's or the embedded wheel's)"
    server = PrivatePostgres(bin_dir)
    server.initdb()
    server.start()
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE carbon")
    try:
        yield server
    finally:
        server.destroy()


def test_the_replica_script_streams_from_a_primary_the_init_script_prepared(primary, tmp_path):
    as_postgres = primary._as_user()
    env = {
        "PATH": f"{primary.bin_dir}:{os.environ['PATH']}",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(primary.port),
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "carbon",
        "PGDATA": str(primary.data),
        "REPLICATION_PASSWORD": "a-replication-password",
    }
    subprocess.run(
        ["sh", str(SCRIPTS / "postgres-primary-init.sh")],
        env=env,
        check=True,
        timeout=30,
        capture_output=True,
    )
    hba = (primary.data / "pg_hba.conf").read_text().splitlines()
    assert hba[-1] == "host replication replicator all scram-sha-256"
    with psycopg.connect(primary.url(), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
        conn.execute("CREATE TABLE replicated (id int PRIMARY KEY)")
        conn.execute("INSERT INTO replicated VALUES (1)")

    replica_root = Path(primary.root) / "replica"
    replica_root.mkdir()
    if primary.user is not None:
        shutil.chown(replica_root, primary.user.pw_uid, primary.user.pw_gid)
    replica_port = free_port()
    replica_env = {
        "PATH": env["PATH"],
        "PRIMARY_HOST": "127.0.0.1",
        "PRIMARY_PORT": str(primary.port),
        "PGDATA": str(replica_root / "data"),
        "REPLICATION_PASSWORD": env["REPLICATION_PASSWORD"],
    }
    with open(tmp_path / "replica.log", "wb") as log:
        replica = subprocess.Popen(
            [
                "sh",
                str(SCRIPTS / "postgres-replica-start.sh"),
                "-p",
                str(replica_port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={replica_root}",
            ],
            env=replica_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=replica_root,
            **as_postgres,
        )
    replica_url = f"postgres://postgres@127.0.0.1:{replica_port}/carbon"
    try:

        def answers():
            assert replica.poll() is None, (tmp_path / "replica.log").read_text()
            try:
                with psycopg.connect(replica_url, connect_timeout=2) as conn:
                    return conn.execute("SELECT pg_is_in_recovery()").fetchone()
            except psycopg.OperationalError:
                return None

        assert until(answers, 60, "the replica answered") == (True,)
        with psycopg.connect(primary.url(), autocommit=True) as conn:
            conn.execute("INSERT INTO replicated VALUES (2)")

        def streamed():
            with psycopg.connect(replica_url) as conn:
                return conn.execute("SELECT array_agg(id ORDER BY id) FROM replicated").fetchone()

        until(lambda: streamed() == ([1, 2],), 15, "a later row streamed to the replica")
        with psycopg.connect(primary.url("postgres")) as conn:
            senders = conn.execute("SELECT usename, state FROM pg_stat_replication").fetchall()
        assert senders == [("replicator", "streaming")]
    finally:
        replica.send_signal(3)  # SIGQUIT: immediate shutdown
        replica.wait(timeout=15)
    assert not process_alive(replica.pid)
