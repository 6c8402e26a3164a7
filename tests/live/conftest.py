"""A live stack for end-to-end tests: the web server (as the Procfile starts it) and the
publisher as real processes on the test database, clients over loopback."""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from bench.harness.processes import free_port, procfile_entries

REPO = Path(__file__).resolve().parents[2]


def database_url_of_tests() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def stack_env(**extra) -> dict:
    return {**os.environ, "DATABASE_URL": database_url_of_tests(), **extra}


def procfile_command(name: str, env: dict) -> list[str]:
    """The Procfile's command line for process `name`, its `${VAR:-default}`s filled from
    `env`, run with this interpreter (`python`) and its Celery (`celery`)."""
    expanded = re.sub(
        r"\$\{(\w+):-([^}]*)\}",
        lambda match: env.get(match[1]) or match[2],
        procfile_entries()[name],
    )
    argv = shlex.split(expanded)
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    if argv[0] == "celery":
        return [sys.executable, "-m", "celery", *argv[1:]]
    return argv


def stack_command(name: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """How the Procfile starts process `name` (web, publisher, worker, beat), on loopback
    (or on `host`)."""
    return procfile_command(name, {"HOST": host, "WEB_PORT": str(port)})


def wait_for_port(port: int, timeout: float = 20, process=None, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process is None or process.poll() is None, "the server exited"
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def benchmark_recompute_send(env: dict, industry_id: str, *, countdown: int = 0) -> None:
    """Queue the benchmark recompute of one industry through the broker of `env`, from a
    process of its own, as the product queues it (`countdown`: an ETA task)."""
    send = (
        "from emissions.tasks import industry_benchmarks_recompute_task as task;"
        f"task.apply_async(args=[{industry_id!r}], countdown={countdown})"
    )
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", send],
        cwd=REPO,
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
    )


class Stack:
    """Processes of the Procfile started by a test, by name."""

    env: dict = {}
    logs: Path | None = None

    def __init__(self, processes: dict, port: int, host: str = "127.0.0.1"):
        self.processes = processes
        self.port = port
        self.host = host
        self.ws_url = f"ws://{host}:{port}/ws/dashboard/updates"
        self.http_url = f"http://{host}:{port}"

    def start(self, name: str) -> subprocess.Popen:
        """Start (or start again) process `name` as the Procfile does; log appended."""
        with open(self.logs / f"{name}.log", "a") as log:
            process = subprocess.Popen(
                stack_command(name, self.port, self.host),
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes[name] = process
        if name == "web":
            wait_for_port(self.port, process=process, host=self.host)
        return process

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self, timeout: float = 5) -> None:
        for name in list(self.processes):
            self.stop(name, timeout=timeout)

    def stop(self, name: str, sig=signal.SIGTERM, timeout: float = 10) -> float:
        """Stop one process; seconds it took to exit."""
        process = self.processes[name]
        started = time.monotonic()
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return time.monotonic() - started


def stack_start(
    names, *, env: dict, logs: Path, port: int | None = None, host: str = "127.0.0.1"
) -> Stack:
    """Start the Procfile's processes `names` with `env`, each logging to
    `logs/<name>.log`; waits until the web server (if any) listens. Stop with
    `stack.stop_all()`."""
    port = port or free_port()
    stack = Stack({}, port, host)
    stack.env, stack.logs = env, logs
    for name in names:
        stack.start(name)
    return stack


@pytest.fixture
def live_stack(transactional_db, tmp_path):
    """The web server and run_publisher against this test's database."""
    env = stack_env(REALTIME_MAX_CONNECTIONS_PER_ADDRESS="10000")
    stack = stack_start(("web", "publisher"), env=env, logs=tmp_path)
    try:
        yield stack
    finally:
        stack.stop_all()
