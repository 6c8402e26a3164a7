"""A live stack for end-to-end tests: the web server (as the Procfile starts it) and the
publisher as real processes on the test database, clients over loopback."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url_of_tests() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def stack_env(**extra) -> dict:
    return {**os.environ, "DATABASE_URL": database_url_of_tests(), **extra}


def stack_command(name: str, port: int) -> list[str]:
    """How the Procfile's web server and publisher are started, on loopback."""
    if name == "web":
        return [sys.executable, "-m", "config.serve", "--host", "127.0.0.1", "--port", str(port)]
    return [sys.executable, "manage.py", "run_publisher"]


def wait_for_port(port: int, timeout: float = 20, process=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process is None or process.poll() is None, "the server exited"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


class Stack:
    def __init__(self, processes: dict, port: int):
        self.processes = processes
        self.port = port
        self.ws_url = f"ws://127.0.0.1:{port}/ws/dashboard/updates"
        self.http_url = f"http://127.0.0.1:{port}"

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


@pytest.fixture
def live_stack(transactional_db, tmp_path):
    """The web server and run_publisher against this test's database."""
    port = free_port()
    env = stack_env(REALTIME_MAX_CONNECTIONS_PER_ADDRESS="10000")
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("web", "publisher")}  # noqa: SIM115
    processes = {
        "web": subprocess.Popen(
            stack_command("web", port),
            cwd=REPO,
            env=env,
            stdout=logs["web"],
            stderr=subprocess.STDOUT,
        ),
        "publisher": subprocess.Popen(
            stack_command("publisher", port),
            cwd=REPO,
            env=env,
            stdout=logs["publisher"],
            stderr=subprocess.STDOUT,
        ),
    }
    stack = Stack(processes, port)
    try:
        wait_for_port(port)
        yield stack
    finally:
        for name in processes:
            stack.stop(name, timeout=5)
        for log in logs.values():
            log.close()
