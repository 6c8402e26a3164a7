"""Processes of a bench run and what /proc says of them: free ports, the Procfile's
command lines, how a child starts (open files, death with its parent), CPU and RSS."""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import socket
import sys
import time

from bench.common import REPO
from config.ports_check import port_taken

PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port nothing listens on now, on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_run(count: int, host: str = "127.0.0.1") -> int:
    """The first of `count` consecutive free ports (web processes behind HAProxy listen on
    a run of them, config/haproxy.py)."""
    for _ in range(50):
        first = free_port()
        if first + count < 65536 and all(port_taken(host, first + i) is None for i in range(count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports found")


def procfile_entries() -> dict[str, str]:
    """The Procfile's command lines, by process name (what `make run` starts)."""
    entries = {}
    for line in (REPO / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and not line.startswith("#"):
            entries[name.strip()] = command.strip()
    return entries


def child_preexec() -> None:
    """In a child before exec: as many open files as allowed, and a SIGTERM when the
    scenario process dies (killed by a timeout), so no server outlives it."""
    nofile_preexec()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def nofile_preexec() -> None:
    """As many open files as allowed (65536 if we may)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, 65536), max(hard, 65536)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def proc_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]
    return (sum(values) - idle) / ticks, sum(values) / ticks


def pids_named(name: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/comm") as comm:
                if comm.read().strip() == name:
                    out.append(int(entry))
    return out


class CpuMeter:
    """CPU used by named processes over a window, in cores (1.0 = one core busy)."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = groups

    def snapshot(self) -> dict:
        groups = {**self.groups, "postgres": pids_named("postgres")}
        return {
            "at": time.monotonic(),
            "machine": machine_cpu()[0],
            "groups": {
                name: {pid: proc_cpu_s(pid) for pid in pids} for name, pids in groups.items()
            },
        }

    @staticmethod
    def cores(first: dict, last: dict) -> dict:
        seconds = max(last["at"] - first["at"], 1e-6)
        out = {"machine": round((last["machine"] - first["machine"]) / seconds, 2)}
        for name, pids in last["groups"].items():
            before = first["groups"].get(name, {})
            used = [cpu - before.get(pid, 0.0) for pid, cpu in pids.items()]
            # Backends that ended during the window are missing: postgres is a lower bound.
            out[name] = round(sum(used) / seconds, 2)
            if name == "loadgens":
                out["loadgen_max"] = round(max(used, default=0.0) / seconds, 2)
        # Whatever else ran on the machine meanwhile (other benchmarks, the system).
        out["others"] = round(
            out["machine"] - sum(v for k, v in out.items() if k not in ("machine", "loadgen_max")),
            2,
        )
        return out


def stop_on_sigterm() -> None:
    """SIGTERM ends the scenario through its `finally` blocks (servers and load
    generators stopped), like Ctrl-C."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
