"""The stack a scenario measures: one web server and one publisher as processes on the
bench database, and the tidying of what earlier runs left in PostgreSQL and Redis."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg

from bench.common import REPO
from bench.harness.processes import child_preexec, free_port, free_port_run, proc_rss_kb
from config.haproxy import HaproxyLayout, haproxy_command, haproxy_config_write
from config.web import web_process_command

# The product's server (config/serve.py) first, then daphne for the comparison.
SERVERS = ("uvicorn", "daphne")
PRODUCT_SERVER = "uvicorn"


def redis_prefix_clear(prefix: str) -> int:
    """Remove what one run left in Redis under its prefix (queued Celery tasks, cache)."""
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()
    return len(keys)


# Tables a run churns: connection rows (written on every connect and refreshed every
# 15 s), the writer's rows, the log and the publisher's state.
CHURNED_TABLES = (
    "active_connections",
    "context_heads",
    "aggregate_totals",
    "change_log_state",
    "emission_records",
    "companies",
    "data_changes",
)


def vacuum_churned(database_url: str) -> None:
    """VACUUM what earlier runs churned, so each run starts alike even where autovacuum
    is off (it is on this machine's server): a bloated active_connections alone made
    5,000 connects take twice as long."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in CHURNED_TABLES:
            conn.execute(f"VACUUM (ANALYZE) {table}")


def active_connections_tidy(database_url: str) -> None:
    """Rows of server processes on this host that no longer exist (killed bench runs)."""
    host = socket.gethostname()
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT DISTINCT server FROM active_connections WHERE server LIKE %s", [f"{host}:%"]
        ).fetchall()
        dead = [s for (s,) in rows if not Path(f"/proc/{s.rpartition(':')[2]}").exists()]
        if dead:
            conn.execute("DELETE FROM active_connections WHERE server = ANY(%s)", [dead])


# With --gc-trace the web server starts through this: every collection of the oldest
# generation, and any other over 5 ms, is logged (time, generation, ms, objects collected).
GC_TRACE_BOOT = """
import gc, os, runpy, sys, time
log = open(os.environ["BENCH_GC_TRACE"], "w", buffering=1)
began = [0.0]
def traced(phase, info):
    if phase == "start":
        began[0] = time.perf_counter()
        return
    took = (time.perf_counter() - began[0]) * 1000
    if info["generation"] == 2 or took > 5:
        log.write(f"{time.time():.3f} {info['generation']} {took:.1f} {info['collected']}\\n")
gc.callbacks.append(traced)
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def web_command(server: str, port: int, gc_trace: bool = False) -> list[str]:
    if gc_trace:
        command = web_command(server, port)
        return [sys.executable, "-c", GC_TRACE_BOOT, *command[2:]]
    if server == "daphne":
        # As in the Procfile, on loopback.
        return [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "config.asgi:application",
        ]
    if server == "uvicorn":
        # The product's web server (config/serve.py), as the Procfile starts it.
        return [sys.executable, "-m", "config.serve", "--host", "127.0.0.1", "--port", str(port)]
    raise ValueError(server)


def uvicorn_missing() -> bool:
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        return True
    return False


class Stack:
    """One web server process and one publisher against the bench database; with
    `haproxy`, `web_processes` web servers behind HAProxy on the stack's port, as
    `WEB_PROCESSES=N make run` starts them (config/web.py, config/haproxy.py)."""

    def __init__(
        self,
        server: str,
        database_url: str,
        logdir: Path,
        gc_trace: bool = False,
        env: dict[str, str] | None = None,
        web_processes: int = 1,
        haproxy: bool = False,
    ):
        if (web_processes > 1 or haproxy) and (server != PRODUCT_SERVER or gc_trace):
            raise ValueError("HAProxy fronts the product's server, without --gc-trace")
        self.server = server
        self.web_processes = web_processes
        self.haproxy = haproxy or web_processes > 1
        self.extra_env = env or {}
        self.gc_trace = logdir / f"gc-{server}-{os.getpid()}.txt" if gc_trace else None
        self.database_url = database_url
        self.logdir = logdir
        self.port = free_port()
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: list = []

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/dashboard/updates"

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def environment(self) -> dict[str, str]:
        """The environment every process of the stack starts with."""
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_PREFIX": self.prefix,
            "REALTIME_MAX_CONNECTIONS_PER_ADDRESS": "100000",
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            "WEB_ACCESS_LOG": "0",
            "DEBUG": "0",
            **self.extra_env,
        }
        if self.gc_trace:
            env["BENCH_GC_TRACE"] = str(self.gc_trace)
        return env

    def commands(self) -> dict[str, list[str]]:
        """The stack's processes by name; `web` (or `haproxy`) is the one answering on
        `port`, `web.1`...`web.N` the web servers behind HAProxy."""
        publisher = [sys.executable, "manage.py", "run_publisher"]
        if not self.haproxy:
            return {
                "web": web_command(self.server, self.port, gc_trace=self.gc_trace is not None),
                "publisher": publisher,
            }
        layout = HaproxyLayout(
            processes=self.web_processes,
            host="127.0.0.1",
            port=self.port,
            backend_port=free_port_run(self.web_processes),
            run_dir=self.logdir / f"haproxy-{self.port}",
        )
        commands = {}
        for number, port in enumerate(layout.backend_ports, start=1):
            commands[f"web.{number}"] = web_process_command(port)
        haproxy_config_write(layout)
        commands["haproxy"] = haproxy_command(layout)
        commands["publisher"] = publisher
        return commands

    def web_pids(self) -> list[int]:
        """The web server processes (not HAProxy)."""
        return [p.pid for name, p in self.processes.items() if name.split(".")[0] == "web"]

    def start(self) -> Stack:
        env = self.environment()
        for name, command in self.commands().items():
            log = open(self.logdir / f"{self.server}-{name}-{self.port}.log", "w")  # noqa: SIM115
            self.logs.append(log)
            self.processes[name] = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=child_preexec,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{name} exited; see {self.logdir}")
            with contextlib.suppress(OSError):
                self.status()
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"{self.server} did not answer on {self.port}")

    def status(self) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/updates/status"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())

    def status_or_none(self, timeout: float = 10) -> dict | None:
        """The status, or None when the server did not answer in time (overloaded)."""
        try:
            url = f"http://127.0.0.1:{self.port}/api/updates/status"
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    def publisher_idle(self, timeout: float = 60) -> bool:
        """Wait until nothing waits to be published (read from the database directly, so
        an overloaded web server does not stall the wait)."""
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                pending = conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM data_changes WHERE processed_at IS NULL)"
                ).fetchone()[0]
                if not pending:
                    return True
                time.sleep(0.05)
        return False

    def rss_kb(self) -> int:
        """Resident memory of the web server processes, summed."""
        return sum(proc_rss_kb(pid) for pid in self.web_pids())

    def gc_pauses(self, from_s: float, to_s: float) -> dict | None:
        """Collections the web server logged in a window (with --gc-trace)."""
        if self.gc_trace is None or not self.gc_trace.exists():
            return None
        full, slow = [], []
        for line in self.gc_trace.read_text().splitlines():
            at, generation, took, _ = line.split()
            if from_s <= float(at) <= to_s:
                (full if generation == "2" else slow).append(float(took))
        return {
            "full_collections": len(full),
            "full_max_ms": max(full, default=0.0),
            "full_total_ms": round(sum(full), 1),
            "younger_over_5ms": len(slow),
        }

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for log in self.logs:
            log.close()
        with contextlib.suppress(Exception):
            redis_prefix_clear(self.prefix)
