"""What the two soaks share: the `make run` process set, a fresh database, and the web
process's connections as the server, the kernel and the database each count them.

bench/soak_loss.py and bench/soak_churn.py run the Procfile's web, publisher, Celery worker
and beat (not flower, not the simulator) with the commands the Procfile gives them, where
the other scenarios run only the web server and the publisher (bench/harness/stack.py's Stack,
which this extends).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg

from bench.common import manage, server_url
from bench.harness.processes import procfile_entries
from bench.harness.stack import Stack

# The processes of `make run` that the soaks start: everything but flower (a monitoring
# UI) and the simulator (it would write changes of its own, at its own rate).
SOAK_PROCESSES = ("web", "publisher", "worker", "beat")
# How long start-up may take for a Celery worker to report itself (health's `celery`).
CELERY_READY_S = 45.0


def procfile_commands(names: tuple[str, ...] = SOAK_PROCESSES) -> dict[str, str]:
    """The Procfile's command lines of these processes, by name."""
    entries = procfile_entries()
    missing = [name for name in names if name not in entries]
    if missing:
        raise ValueError(f"not in the Procfile: {', '.join(missing)}")
    return {name: entries[name] for name in names}


class ProcfileStack(Stack):
    """The Procfile's web, publisher, worker and beat, each started by its Procfile line
    through `sh -c` (as honcho does), with `make run`'s environment on a free port: HOST,
    WEB_PORT, the interpreter's directory first on PATH (its `python` and `celery`). DEBUG
    stays off as in the other scenarios (DEBUG keeps every query of a request in memory)."""

    def __init__(self, database_url: str, logdir: Path, env: dict[str, str] | None = None):
        super().__init__("uvicorn", database_url, logdir, env=env)

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env.update(
            HOST="127.0.0.1",
            WEB_PORT=str(self.port),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        )
        return env

    def commands(self) -> dict[str, list[str]]:
        # `exec`: the process id is the program's, not a shell's (RSS, active_connections).
        return {
            name: ["/bin/sh", "-c", f"exec {command}"]
            for name, command in procfile_commands().items()
        }

    def start(self) -> ProcfileStack:
        super().start()
        self.celery_ready_s = self.celery_wait(CELERY_READY_S)
        return self

    def health(self) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/realtime/health"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 503 when degraded: the body says why
            return json.loads(exc.read())

    def celery_wait(self, timeout: float) -> float | None:
        """Seconds until health saw a Celery worker, None if it did not in time."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            with contextlib.suppress(OSError, ValueError):
                if (self.health().get("celery") or {}).get("ok"):
                    return round(time.monotonic() - started, 1)
            time.sleep(1)
        return None

    def server_name(self) -> str:
        """The web process's `active_connections.server` (realtime/services.py)."""
        return f"{socket.gethostname()}:{self.pid('web')}"[:100]


# -- a fresh database ----------------------------------------------------------------------


def fresh_database(name: str, *, companies: int) -> tuple[str, dict]:
    """Drop and create database `name` on DATABASE_URL's server, migrate it and load the
    demo data (`seed_demo` also resets the change log); its URL and how long each took."""
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ValueError(f"database name {name!r}: lower-case letters, digits and _ only")
    base = server_url().rpartition("/")[0]
    timings = {}
    started = time.monotonic()
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}"
    timings["create_s"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    manage("migrate", "--noinput", "-v", "0", database_url=url)
    timings["migrate_s"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    manage("seed_demo", "--no-progress", "--companies", str(companies), database_url=url)
    timings["seed_s"] = round(time.monotonic() - started, 1)
    return url, timings


# -- connections, counted three ways -----------------------------------------------------------

TCP_ESTABLISHED = "01"


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` holds open."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(fd.path)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def established_on_port(port: int, pid: int) -> int:
    """ESTABLISHED TCP sockets of process `pid` whose local port is `port`: its end of
    every open connection (what `ss -tnp state established '( sport = :PORT )'` counts for
    it), read from /proc/net/tcp and tcp6 so no tool or package is needed. Only the
    process's own sockets count, not, say, a client still reaching for someone else's
    earlier server on the same port number."""
    owned = socket_inodes(pid)
    # A set: the tables are read while the kernel changes them, and a socket can then be
    # listed twice (seen here: 2 or 3 extra of 200 when other connections came and went).
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines, None)
            for line in lines:
                fields = line.split()
                local, state, inode = fields[1], fields[3], int(fields[9])
                if (
                    state == TCP_ESTABLISHED
                    and int(local.rpartition(":")[2], 16) == port
                    and inode in owned
                ):
                    found.add(inode)
    return len(found)


def port_clients(port: int) -> list[str]:
    """Who holds the client end of each ESTABLISHED connection to `port` (`ss -tnp`), to
    tell a stray client from the load generators' when the counts disagree."""
    command = ["ss", "-tnpH", "state", "established", f"( dport = :{port} )"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    owners: dict[str, int] = {}
    for line in out.splitlines():
        match = re.search(r'users:\(\("([^"]+)",pid=(\d+)', line)
        key = f"{match[1]}:{match[2]}" if match else "?"
        owners[key] = owners.get(key, 0) + 1
    return [f"{owner} x{count}" for owner, count in sorted(owners.items())]


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
# The web process's own counts: connections per transport (realtime/metrics.py) and, when
# the server has them, its sessions and the hub's members.
SESSION_METRICS = (
    "carbon_realtime_process_connections",
    "carbon_realtime_hub_members",
)


def metrics_read(port: int, names: tuple[str, ...] = SESSION_METRICS) -> dict[str, dict]:
    """`/metrics` of one process: for each of `names` it exposes, its samples by label
    set and their sum; names it does not expose are left out."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, dict] = {}
    for line in text.splitlines():
        match = METRIC_LINE.match(line)
        if not match or match[1] not in names:
            continue
        family = out.setdefault(match[1], {"total": 0.0, "samples": {}})
        value = float(match[3])
        family["samples"][match[2] or ""] = value
        family["total"] += value
    for family in out.values():
        family["total"] = round(family["total"])
    return out


def connection_rows(database_url: str, server: str) -> tuple[int, int]:
    """(rows of this server process, rows of every process) in active_connections."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FILTER (WHERE server = %s), count(*) FROM active_connections",
            [server],
        ).fetchone()


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour; None under two points."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / spread
    return slope * 3600


def loss_figures(cell: dict) -> dict:
    """A soak's loss check from a merged report: in the soaks' words, a gap is a change
    `missing` and a duplicate one `duplicated`."""
    return {
        "items_expected": cell["items_expected"],
        "items_received": cell["items_received"],
        "coalesced": cell["coalesced"],
        "lost": cell["lost"],
        "missing": cell["gaps"],
        "duplicated": cell["duplicates"],
        "unexpected": cell["unexpected"],
        "resets": cell["resets"],
        "errors": cell["errors"],
        "lost_by_context": cell["lost_by_context"],
        "p50_ms": cell["p50_ms"],
        "p99_ms": cell["p99_ms"],
    }
