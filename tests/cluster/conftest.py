"""A cluster for the cross-process contract tests: web processes and HAProxy started with
the commands and the rendered configuration of config/web.py, and the publisher, on the
test database.

The launcher itself (config/web.py) stops every process when one exits, as a Procfile
does; a supervisor per process is what lets one be killed while the others serve, so
the fixture starts them one by one, the way such a supervisor would.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from bench.harness.processes import free_port_run
from config.haproxy import HaproxyLayout, haproxy_binary, haproxy_command, haproxy_config_write
from config.web import forwarded_allow_ips, web_process_command
from tests.faults.database import server_name
from tests.faults.private_servers import descendant_pids, process_alive
from tests.live.conftest import REPO, database_url_of_tests, free_port, stack_start, wait_for_port

PROCESSES = 3
# Connections one client address may hold over every process (the cap test); the other
# tests stay under it per address.
CAP_PER_ADDRESS = 12
# An old HAProxy worker's connections are closed this long after a reload (the drain test).
HARD_STOP_AFTER = "3s"


class Cluster:
    """N web processes behind HAProxy, and the publisher; started, killed and restarted
    one by one."""

    def __init__(self, layout: HaproxyLayout, env: dict, logs: Path):
        self.layout = layout
        self.env = env
        self.logs = logs
        self.database_url = env["DATABASE_URL"]
        self.port = layout.port
        self.http_url = f"http://127.0.0.1:{layout.port}"
        self.ws_url = f"ws://127.0.0.1:{layout.port}/ws/dashboard/updates"
        self.web: dict[int, subprocess.Popen] = {}
        self.haproxy: subprocess.Popen | None = None
        self.publisher = None
        # Every process ever started, to check at the end that none is left.
        self.started: list[subprocess.Popen] = []

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "a") as log:
            process = subprocess.Popen(
                argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.started.append(process)
        return process

    # -- web processes ------------------------------------------------------------------

    def start_web(self, *numbers: int) -> None:
        """Start web processes `numbers` together (Django's start takes seconds each) and
        wait until they listen."""
        for n in numbers:
            port = self.layout.backend_ports[n - 1]
            self.web[n] = self._spawn(f"web.{n}", web_process_command(port))
        for n in numbers:
            wait_for_port(self.layout.backend_ports[n - 1], process=self.web[n])

    def stop_web(self, n: int, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        process = self.web[n]
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def server(self, n: int) -> str:
        """How the hub, active_connections and the monitor name web process n."""
        return server_name(self.web[n].pid)

    def number_of(self, server: str) -> int:
        return next(n for n in self.web if self.server(n) == server)

    # -- HAProxy ------------------------------------------------------------------------

    def start_haproxy(self) -> None:
        haproxy_config_write(self.layout)
        self.haproxy = self._spawn("haproxy", haproxy_command(self.layout))
        wait_for_port(self.port, process=self.haproxy)

    def admin(self, command: str) -> str:
        """A command of HAProxy's runtime API (stats socket); its answer."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.layout.stats_socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self) -> dict[str, str]:
        """HAProxy's view of each web process: web1 -> UP, DOWN, MAINT, ..."""
        text = self.admin("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == "web" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_state(self, name: str, prefix: str, timeout: float = 15) -> float:
        """Until HAProxy reports server `name` in a state starting with `prefix`;
        seconds it took."""
        started = time.monotonic()
        while not (state := self.server_states().get(name, "")).startswith(prefix):
            assert time.monotonic() - started < timeout, f"{name} is {state}, not {prefix}"
            time.sleep(0.05)
        return time.monotonic() - started

    def only(self, *numbers: int) -> None:
        """Let HAProxy send new clients to web processes `numbers` only (runtime API)."""
        for n in self.web:
            verb = "enable" if n in numbers else "disable"
            self.admin(f"{verb} server web/web{n}")

    # -- all ----------------------------------------------------------------------------

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        """SIGTERM to every process at once (each drains for up to seconds), then wait."""
        processes = [self.haproxy, *self.web.values()]
        if self.publisher is not None:
            processes += list(self.publisher.processes.values())
        running = [p for p in processes if p is not None and p.poll() is None]
        for process in running:
            process.terminate()
        for process in running:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def cluster(transactional_db, tmp_path):
    """PROCESSES web processes behind HAProxy and the publisher, on this test's database;
    everything stopped at the end, and checked to be.

    One per test, not per module: the test database is emptied after each test (the
    change log with it), which a cluster kept running would not survive as a real one
    does not."""
    # No haproxy fails here, loudly (not a skip): `make run` and CI install it.
    haproxy_binary()
    database_url = database_url_of_tests()
    run_dir = tmp_path
    layout = HaproxyLayout(
        processes=PROCESSES,
        host="127.0.0.1",
        port=free_port(),
        backend_port=free_port_run(PROCESSES),
        run_dir=run_dir,
        hard_stop_after=HARD_STOP_AFTER,
    )
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REALTIME_MAX_CONNECTIONS_PER_ADDRESS": str(CAP_PER_ADDRESS),
        "FORWARDED_ALLOW_IPS": forwarded_allow_ips(os.environ.get("FORWARDED_ALLOW_IPS")),
    }
    cluster = Cluster(layout, env, run_dir)
    descendants: set[int] = set()
    try:
        # The publisher starts while the web processes do.
        cluster.publisher = stack_start(("publisher",), env=env, logs=run_dir, port=layout.port)
        cluster.started.extend(cluster.publisher.processes.values())
        cluster.start_web(*range(1, PROCESSES + 1))
        cluster.start_haproxy()
        for n in range(1, PROCESSES + 1):
            cluster.wait_state(f"web{n}", "UP")
        yield cluster
    finally:
        for process in cluster.started:
            descendants.update(descendant_pids(process.pid))
        cluster.stop_all()
    running = [p.args for p in cluster.started if p.poll() is None]
    assert running == [], f"processes left running: {running}"
    deadline = time.monotonic() + 5
    while any(process_alive(pid) for pid in descendants) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in descendants if process_alive(pid)] == []
