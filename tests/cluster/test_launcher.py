"""`WEB_PROCESSES=2`: the Procfile's web line (config/web.py) serves on one port from two
processes behind HAProxy, and stopping it leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest

from config.haproxy import haproxy_binary
from tests.cluster.conftest import free_port_run
from tests.faults.private_servers import descendant_pids, process_alive
from tests.live.conftest import REPO, free_port, procfile_command, wait_for_port

pytestmark = [pytest.mark.timeout(90)]


def test_two_processes_on_one_port_and_nothing_left_after_sigterm(tmp_path):
    haproxy_binary()  # missing: fails here, saying how to install it
    port = free_port()
    # The liveness answers need neither the database nor Redis: none is set up here.
    env = {
        **os.environ,
        "WEB_PROCESSES": "2",
        "WEB_PORT": str(port),
        "WEB_BACKEND_PORT": str(free_port_run(2)),
        "WEB_RUN_DIR": str(tmp_path),
    }
    with open(tmp_path / "web.log", "w") as log:
        launcher = subprocess.Popen(
            procfile_command("web", env),
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, process=launcher)
        seen: set[str] = set()
        deadline = time.monotonic() + 20
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            while len(seen) < 2 and time.monotonic() < deadline:
                response = http.get("/api/realtime/live")
                if response.status_code == 200:
                    assert response.json()["status"] == "serving"
                    seen.add(response.json()["process"])
                time.sleep(0.1)
        assert len(seen) == 2, f"one port served by {seen}"
        # Two uvicorn processes, HAProxy's master and worker, and honcho's watchers.
        children = descendant_pids(launcher.pid)
        assert len(children) >= 4, children
        launcher.send_signal(signal.SIGTERM)
        status = launcher.wait(timeout=20)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    # honcho's status for a SIGTERM, passed on.
    assert status == 143, status
    deadline = time.monotonic() + 10
    while any(process_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in children if process_alive(pid)]
    assert left == [], f"left behind: {left}\n{(tmp_path / 'web.log').read_text()[-2000:]}"
    output = (tmp_path / "web.log").read_text()
    assert "2 web processes on 127.0.0.1:" in output
    assert "haproxy started" in output and "web.2 started" in output


def test_a_bad_process_count_is_refused_clearly(tmp_path):
    result = subprocess.run(
        procfile_command("web", {"WEB_PROCESSES": "0", "WEB_PORT": str(free_port())}),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "processes must be 1 to 64, not 0" in result.stderr
    assert "Traceback" not in result.stderr
