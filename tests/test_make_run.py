"""`make run` on a busy machine: taken ports are named before anything starts, and flower,
the one optional process, failing leaves the others running (honcho stops every process
when one of them exits)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.harness.processes import procfile_entries

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def listening(host: str = "127.0.0.1") -> Iterator[int]:
    """A port some other program holds for the duration."""
    with socket.socket() as holder:
        holder.bind((host, 0))
        holder.listen()
        yield holder.getsockname()[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ports_check(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "config.ports_check", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_free_ports_pass_silently() -> None:
    result = ports_check(
        "127.0.0.1", f"web={free_port()}:PORT", f"flower={free_port()}:FLOWER_PORT"
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_each_taken_port_is_named_with_the_variable_that_moves_it() -> None:
    web_port = free_port()
    with listening() as flower_port, listening("127.0.0.2") as other:
        result = ports_check(
            "127.0.0.1",
            f"web={web_port}:PORT",
            f"flower={flower_port}:FLOWER_PORT@127.0.0.1",
            f"extra={other}:EXTRA_PORT@127.0.0.2",
        )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    assert f"port {flower_port} (flower) on 127.0.0.1 is not free" in lines[0]
    assert "FLOWER_PORT=<another port> make run" in lines[0]
    assert f"port {other} (extra) on 127.0.0.2" in lines[1]
    assert "EXTRA_PORT=" in lines[1]


def test_a_port_held_on_another_address_does_not_count() -> None:
    with listening("127.0.0.2") as port:
        assert ports_check("127.0.0.1", f"web={port}:PORT").returncode == 0


def test_malformed_arguments_are_refused_clearly() -> None:
    for argument in ("web", "web=80", "web=eighty:PORT", "=80:PORT"):
        result = ports_check("127.0.0.1", argument)
        assert result.returncode == 2, argument
        assert "expected process=port:VARIABLE" in result.stderr
        assert "Traceback" not in result.stderr
    assert ports_check().returncode == 2


def test_flower_failing_to_start_leaves_its_slot_running() -> None:
    """The Procfile's flower line with its port taken: flower exits, its line says so and
    keeps running, so honcho does not stop the web server and publisher with it."""
    with listening() as port:
        env = {
            **os.environ,
            "FLOWER_PORT": str(port),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        line = subprocess.Popen(
            ["sh", "-c", procfile_entries()["flower"]],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            seen = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                text = line.stdout.readline()
                seen.append(text)
                if "flower exited" in text or not text:
                    break
            output = "".join(seen)
            assert "Address already in use" in output
            assert "flower exited with status 1: the other processes go on without it" in output
            time.sleep(1)
            assert line.poll() is None, "the flower line ended, and honcho would stop the rest"
        finally:
            # As honcho stops its processes: SIGTERM to the process group.
            os.killpg(line.pid, signal.SIGTERM)
            assert line.wait(timeout=10) != 0
