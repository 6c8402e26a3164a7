"""Memory per idle live connection: WebSocket and Server-Sent Events, on one web server
process (uvicorn, as config/serve.py runs it).

DESIGN.md: "memory per idle WebSocket connection: under 35 KB (a minimal consumer: 32 to
45 KB measured here)". For each transport the scenario starts a fresh web server process
(raised open-file limit, SIGUSR1 runs a full garbage collection in it), then two client
processes (bench/loadclients.py) open idle connections in steps (0, 1,000, 5,000;
`--quick`: 0, 200, 1,000). Every connection subscribes to one company context (100
public companies of the bench database, round robin) and reads its `hello` and
`subscribed`. After each step the server is left to settle, collected, and its resident
set (VmRSS of /proc/<pid>/status) read; KB per connection is the RSS delta over the
connection delta between steps. Traffic stays on 127.0.0.1; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any

import psycopg

from bench.common import REPO, bench_database_ready, result_write
from bench.harness.processes import free_port

TARGET_KB = 35.0
STEPS = (0, 1_000, 5_000)
QUICK_STEPS = (0, 200, 1_000)
CLIENT_PROCESSES = 2
CONTEXT_COMPANIES = 100
# The bench database is shared with the other scenarios, and bench_database_ready reseeds
# it whenever the company count differs: quick runs use the same 100,000 so that they
# neither wait for a reseed nor pull the database from under a scenario running beside.
COMPANIES = 100_000
QUICK_COMPANIES = 100_000
# How long a step may take to open its connections, and the settling that follows.
OPEN_DEADLINE_S = 300.0
SETTLE_MIN_S = 8.0
SETTLE_MAX_S = 45.0
SETTLE_WINDOW = 5  # samples, one a second, within SETTLE_TOLERANCE of each other
SETTLE_TOLERANCE = 0.005
# --quick settles for less long (readings here were steady within 3 s of a step).
QUICK_SETTLE = (4.0, 3)


# -- the server ------------------------------------------------------------------------


def serve(port: int) -> None:
    """Run the product's web server (config/serve.py: uvicorn) in this process, with the
    open-file limit raised and SIGUSR1 bound to a full collection (so a reading is not
    inflated by garbage waiting for the collector)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGUSR1, lambda *_: gc.collect())
    from config import serve as web_server

    sys.argv = ["config.serve", "--host", "127.0.0.1", "--port", str(port)]
    web_server.main()


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, VmHWM (kB) and Threads of a process."""
    out = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    return out


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Server:
    """One web server process on a free loopback port, logging to a file."""

    def __init__(self, database_url: str, log: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.prefix = f"bench-memory-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_PREFIX": self.prefix,
            "REALTIME_MAX_CONNECTIONS_PER_ADDRESS": "100000",
            "DEBUG": "0",
            "PYTHONUNBUFFERED": "1",
            "WEB_ACCESS_LOG": "0",
        }
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.memory", "--serve", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.process.pid

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until it answers HTTP (one health request: a server that has served one)."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the web server exited with {self.process.returncode}")
            try:
                httpx.get(f"{self.base}/api/realtime/health", timeout=5)
                return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise TimeoutError("the web server did not start")

    def collect(self) -> None:
        os.kill(self.pid, signal.SIGUSR1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


def settle(
    server: Server, min_s: float = SETTLE_MIN_S, window_size: int = SETTLE_WINDOW
) -> dict[str, Any]:
    """Wait until RSS stops moving, collect garbage, then read it."""
    started = time.monotonic()
    samples: list[int] = []
    while True:
        time.sleep(1)
        samples.append(proc_status(server.pid)["VmRSS"])
        window = samples[-window_size:]
        elapsed = time.monotonic() - started
        spread = max(window) - min(window)
        steady = len(window) == window_size and spread <= SETTLE_TOLERANCE * max(window)
        if (elapsed >= min_s and steady) or elapsed >= SETTLE_MAX_S:
            break
    server.collect()
    time.sleep(1.5)
    status = proc_status(server.pid)
    return {**status, "settle_s": round(time.monotonic() - started, 1), "steady": steady}


# -- the clients -----------------------------------------------------------------------


class Client:
    """One bench.loadclients process."""

    def __init__(self, transport: str, base: str, contexts: list[str], offset: int, log: IO):
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.loadclients",
                "--transport",
                transport,
                "--base",
                base,
                "--contexts",
                ",".join(contexts),
                "--offset",
                str(offset),
                "--deadline",
                "1800",
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )

    def send(self, command: str) -> None:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def answer(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("a client process did not answer in time")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"a client process exited ({self.process.poll()})")
        return json.loads(line)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.send("close")
            self.answer(40)
        with contextlib.suppress(Exception):
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def company_contexts(database_url: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id FROM companies WHERE is_public ORDER BY id LIMIT %s", [CONTEXT_COMPANIES]
        ).fetchall()
    return [f"company:{row[0]}" for row in rows]


def tracked_rows(database_url: str, pid: int, *, delete: bool = False) -> int:
    """active_connections rows of that server process (its SERVER is host:pid)."""
    server = f"{socket.gethostname()}:{pid}"[:100]
    with psycopg.connect(database_url, autocommit=True) as conn:
        if delete:
            return conn.execute(
                "DELETE FROM active_connections WHERE server = %s", [server]
            ).rowcount
        return conn.execute(
            "SELECT count(*) FROM active_connections WHERE server = %s", [server]
        ).fetchone()[0]


def transport_run(
    transport: str,
    database_url: str,
    contexts: list[str],
    steps: tuple[int, ...],
    logs: Path,
    quick: bool = False,
) -> dict[str, Any]:
    """Open connections of one transport in steps on a fresh server; RSS at each step."""
    server = Server(database_url, logs / f"web-{transport}.log")
    clients: list[Client] = []
    client_log = (logs / f"clients-{transport}.log").open("w")
    readings: list[dict[str, Any]] = []
    try:
        server.wait_ready()
        stride = len(contexts) // CLIENT_PROCESSES
        clients = [
            Client(transport, server.base, contexts, k * stride, client_log)
            for k in range(CLIENT_PROCESSES)
        ]
        opened = 0
        for target in steps:
            step_started = time.monotonic()
            answers = []
            if target > opened:
                share = [(target - opened) // CLIENT_PROCESSES] * CLIENT_PROCESSES
                share[0] += (target - opened) - sum(share)
                for client, count in zip(clients, share, strict=True):
                    client.send(f"open {count}")
                answers = [client.answer(OPEN_DEADLINE_S) for client in clients]
            opened = sum(a["open"] for a in answers) if answers else opened
            failed = sum(a["failed"] for a in answers)
            open_s = round(time.monotonic() - step_started, 1)
            reading = settle(server, *QUICK_SETTLE) if quick else settle(server)
            reading.update(
                {
                    "target": target,
                    "connections": opened,
                    "failed": failed,
                    "errors": [e for a in answers for e in a.get("errors", [])][:5],
                    "open_s": open_s,
                    "open_files": open_files(server.pid),
                    "tracked_rows": tracked_rows(database_url, server.pid),
                }
            )
            readings.append(reading)
            print(f"{transport}: {reading}", flush=True)
            if failed:
                break
    finally:
        for client in clients:
            client.stop()
        client_log.close()
        pid = server.pid
        server.stop()
        with contextlib.suppress(Exception):
            tracked_rows(database_url, pid, delete=True)
    return {"steps": readings, "slopes": slopes(readings), "base_rss_kb": readings[0]["VmRSS"]}


def slopes(readings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """KB per connection between consecutive steps (RSS and anonymous memory)."""
    out = []
    for before, after in itertools.pairwise(readings):
        added = after["connections"] - before["connections"]
        if added <= 0:
            continue
        out.append(
            {
                "from": before["connections"],
                "to": after["connections"],
                "rss_kb_per_connection": round((after["VmRSS"] - before["VmRSS"]) / added, 1),
                "anon_kb_per_connection": round((after["RssAnon"] - before["RssAnon"]) / added, 1),
            }
        )
    return out


def marginal_slope(data: dict[str, Any], transport: str) -> dict[str, Any] | None:
    """The last step's slope: connections beyond the first batch, one-time costs paid."""
    run = data.get(transport)
    return run["slopes"][-1] if run and run["slopes"] else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="steps of 0, 200 and 1,000")
    parser.add_argument("--companies", type=int, help="bench database size (default 100,000)")
    parser.add_argument("--steps", help="comma-separated connection counts, from 0")
    parser.add_argument("--transport", choices=["ws", "sse"], action="append", help="default: both")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    started = time.monotonic()
    nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    steps = (
        tuple(int(s) for s in args.steps.split(","))
        if args.steps
        else (QUICK_STEPS if args.quick else STEPS)
    )
    if steps[-1] // CLIENT_PROCESSES + 100 > nofile_hard:
        sys.exit(f"the open-file hard limit ({nofile_hard}) is too low for {steps[-1]} clients")
    companies = args.companies or (QUICK_COMPANIES if args.quick else COMPANIES)
    url = bench_database_ready(companies=companies)
    contexts = company_contexts(url)
    # Server and client logs, for a post-mortem; not figures, so not under bench/results.
    logs = Path(tempfile.mkdtemp(prefix="bench-memory-"))

    data: dict[str, Any] = {
        "quick": args.quick,
        "steps": list(steps),
        "companies": companies,
        "logs": str(logs),
        # Other benchmarks may share the two cores: opening rates depend on it, RSS little.
        "load_average_before": os.getloadavg(),
    }
    for transport in args.transport or ["ws", "sse"]:
        data[transport] = transport_run(transport, url, contexts, steps, logs, args.quick)
    marginal = marginal_slope(data, "ws")
    data["meets"] = bool(marginal) and marginal["rss_kb_per_connection"] < TARGET_KB
    data["elapsed_s"] = round(time.monotonic() - started, 1)
    path = result_write("memory", data)
    print(path.read_text())


if __name__ == "__main__":
    main()
