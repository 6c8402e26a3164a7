"""Baselines for the delivery figures: what Python does here without the product.

Issue #5 gives two reference figures measured on this machine and asks for them in the
same run as the product's, so the fan-out figures can be read as ratios:

- a plain Channels consumer per connection under daphne, one process, on
  `RedisPubSubChannelLayer` (each connection joins one group; the publisher calls
  `group_send`);
- a bare `websockets` broadcast without Django, one process, fed by Redis pub/sub
  (the Python limit here).

Both servers are in bench/baseline_servers.py. No database: the publisher (this
process) sends pre-encoded 172-byte frames carrying a sequence number and the
`time.time_ns()` taken just before it published them, at a fixed rate, by `group_send`
or by `PUBLISH` on Redis (loopback). The clients (bench/baseline_clients.py, a minimal
WebSocket reader) run in CLIENT_PROCESSES processes on the same two cores and take
latency as receive time minus that stamp.

Per server: connect the clients, check the path with a few frames, then steps of
increasing deliveries/s (deliveries = frames x clients) at a fixed client count (2,000;
500 with --quick), each a short warm-up and then ~5 s measured (2 s with --quick). A
step passes when every frame of the measured window reached every client, p99 is at
most STEP_P99_MS and the publisher held its rate (finished within 5% of its schedule);
the steps stop at the first that fails. CPU of the server, the clients and this process
comes from /proc/<pid>/stat over the measured window (until every client had the last
frame); the clients' event-loop lateness says whether they, not the server, fell behind.

    python -m bench.baselines            # 2,000 clients, both servers (under 150 s)
    python -m bench.baselines --quick    # 500 clients, fewer and shorter steps (under 40 s)

REDIS_URL must point at loopback; names in Redis start with REDIS_PREFIX and a
per-run id. Writes bench/results/baselines.json; `report_section()` renders it and
`sustained()` gives the best sustained deliveries/s of one baseline for the fan-out
section's ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from urllib.parse import urlparse

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake

from bench.baseline_clients import BUCKET_US, frame
from bench.baseline_servers import FRAME_TYPE, group_name, pubsub_channel
from bench.common import REPO, result_write
from bench.harness import (
    child_preexec,
    free_port,
    hist_percentile,
    machine_cpu,
    proc_cpu_s,
    proc_rss_kb,
    stop_on_sigterm,
)

SERVERS = ("channels", "websockets")
LABELS = {
    "channels": "plain Channels consumer per connection (daphne)",
    "websockets": "bare websockets broadcast, no Django",
}
CLIENT_PROCESSES = 2
STEP_P99_MS = 1000.0
PUBLISHER_SLACK = 0.05  # the publisher may finish this share of the step late
SERVER_START_S = 30.0
OVERRUN_S = 10.0  # past its share of the time budget, a server's run is cut off
ANSWER_S = 60.0  # a client process's answer to one command
ANSWER_BYTES = 2**24  # its longest line (a report with its latency histogram)

# Deliveries/s of the steps (frames/s = deliveries/s / clients). The first step of each
# is the reference point: 2,000 clients x 1 frame/s and 2,000 x 10 frames/s.
FULL = {
    "clients": 2000,
    "warmup_s": 1.0,
    "seconds": 5.0,
    "budget_s": 130.0,
    "wait_s": 3.0,
    "steps": {
        "channels": [2000, 4000, 6000, 8000, 10000, 12000],
        "websockets": [20000, 40000, 60000, 80000, 100000, 120000, 140000],
    },
}
QUICK = {
    "clients": 500,
    "warmup_s": 0.5,
    "seconds": 2.0,
    "budget_s": 34.0,
    "wait_s": 2.0,
    "steps": {
        "channels": [2000, 4000, 6000, 8000],
        "websockets": [20000, 50000, 80000, 110000],
    },
}

# What issue #5 measured on this machine with 2,000 clients (deliveries/s; p99 in ms).
REFERENCE = {
    "channels": {
        "deliveries_per_s": (4000, 6000),
        "p99_ms": (530, 750),
        "p99_at": 2000,
        "text": "4,000 to 6,000 deliveries/s; p99 0.53 to 0.75 s at 2,000 clients x 1 frame/s",
    },
    "websockets": {
        "deliveries_per_s": (80000, 97000),
        "p99_ms": (57, 59),
        "p99_at": 20000,
        "text": "80,000 to 97,000 deliveries/s; p99 57 to 59 ms at 2,000 clients x 20,000/s",
    },
}


# -- the processes ---------------------------------------------------------------------------


class Server:
    """One baseline server process."""

    def __init__(self, kind: str, redis_url: str, prefix: str):
        self.kind = kind
        self.redis_url = redis_url
        self.prefix = prefix
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    async def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "bench.baseline_servers",
            self.kind,
            "--port",
            str(self.port),
            "--redis-url",
            self.redis_url,
            "--prefix",
            self.prefix,
        ]
        self.process = subprocess.Popen(command, cwd=REPO, preexec_fn=child_preexec)
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited with {self.process.returncode}")
            # A whole handshake, not a bare TCP probe (which the servers log as an error).
            with contextlib.suppress(OSError, InvalidHandshake, TimeoutError):
                async with connect(f"ws://127.0.0.1:{self.port}/ws", open_timeout=5):
                    return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.kind} server did not listen on {self.port}")

    def rss_kb(self) -> int:
        return proc_rss_kb(self.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


class ClientProcess:
    """One bench.baseline_clients process, driven over its stdin."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process

    @classmethod
    async def start(cls, port: int, deadline: float, loop: str) -> ClientProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.baseline_clients",
            "--port",
            str(port),
            "--deadline",
            str(deadline),
            "--loop",
            loop,
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=ANSWER_BYTES,
            preexec_fn=child_preexec,  # open files for its sockets; dies with us
        )
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def ask(self, command: str, timeout: float = ANSWER_S) -> dict:
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"client process {self.pid} exited")
        return json.loads(line)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.ask("close", timeout=10)
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


class Fleet:
    """The client processes, each holding its share of the connections."""

    def __init__(self, processes: list[ClientProcess]):
        self.processes = processes

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    async def ask_all(self, commands: list[str], timeout: float = ANSWER_S) -> list[dict]:
        return await asyncio.gather(
            *(p.ask(c, timeout) for p, c in zip(self.processes, commands, strict=True))
        )

    async def open(self, clients: int) -> dict:
        count = len(self.processes)
        shares = [clients // count + (i < clients % count) for i in range(count)]
        answers = await self.ask_all([f"open {n}" for n in shares], timeout=120)
        return {
            "open": sum(a["open"] for a in answers),
            "failed": sum(a["failed"] for a in answers),
            "errors": [e for a in answers for e in a["errors"]][:5],
            "seconds": max(a["seconds"] for a in answers),
        }

    async def window(self, lo: int, hi: int) -> None:
        await self.ask_all([f"window {lo} {hi}"] * len(self.processes))

    async def wait(self, timeout: float) -> dict:
        answers = await self.ask_all([f"wait {timeout}"] * len(self.processes), timeout + 60)
        hist: dict[int, int] = {}
        for answer in answers:
            for bucket, count in answer["hist"].items():
                hist[int(bucket)] = hist.get(int(bucket), 0) + count
        lags = [a["loop_lag_ms"] for a in answers if a["loop_lag_ms"]["p99"] is not None]
        maxima = [a["max_ms"] for a in answers if a["max_ms"] is not None]
        return {
            "connections": sum(a["connections"] for a in answers),
            "closed": sum(a["closed"] for a in answers),
            "complete": sum(a["complete"] for a in answers),
            "missing": sum(a["missing"] for a in answers),
            "out_of_order": sum(a["out_of_order"] for a in answers),
            "delivered": sum(hist.values()),
            "p50_ms": hist_percentile(hist, 0.50, BUCKET_US),
            "p99_ms": hist_percentile(hist, 0.99, BUCKET_US),
            "max_ms": max(maxima, default=None),
            "client_loop_lag_ms": {
                "p99": max((lag["p99"] for lag in lags), default=None),
                "max": max((lag["max"] for lag in lags), default=None),
            },
            "waited_s": max(a["waited_s"] for a in answers),
        }

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.processes), return_exceptions=True)


# -- the publisher ---------------------------------------------------------------------------


class Publisher:
    """Sends frame `seq` the way the server under test takes it."""

    def __init__(self, kind: str, redis_url: str, prefix: str):
        self.kind = kind
        if kind == "channels":
            from channels_redis.pubsub import RedisPubSubChannelLayer

            self.layer = RedisPubSubChannelLayer(hosts=[redis_url], prefix=prefix)
        else:
            import redis.asyncio as redis

            self.redis = redis.Redis.from_url(redis_url)
            self.channel = pubsub_channel(prefix)

    async def send(self, seq: int) -> None:
        # Stamped as late as possible: the latency includes the publish itself.
        if self.kind == "channels":
            text = frame(seq, time.time_ns())
            await self.layer.group_send(group_name(), {"type": FRAME_TYPE, "text": text})
        else:
            await self.redis.publish(self.channel, frame(seq, time.time_ns()))

    async def run(self, first: int, count: int, rate: float, start: float, origin: int) -> dict:
        """Frames first..first+count-1 at `rate`, frame `origin` due at `start` (so the
        warm-up and the measured window of a step keep one schedule)."""
        late_max = 0.0
        for seq in range(first, first + count):
            delay = start + (seq - origin) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late_max = max(late_max, -delay)
            await self.send(seq)
        return {"late_max_ms": round(late_max * 1000, 1)}

    async def close(self) -> None:
        if self.kind == "channels":
            await self.layer.flush()
        else:
            await self.redis.aclose()


# -- one step, one server ---------------------------------------------------------------------


def cpu_snapshot(groups: dict[str, list[int]]) -> dict:
    return {
        "at": time.monotonic(),
        "machine": machine_cpu()[0],
        "groups": {name: [proc_cpu_s(pid) for pid in pids] for name, pids in groups.items()},
    }


def cpu_cores(first: dict, last: dict) -> dict:
    """Cores each group used between two snapshots (1.0 = one core busy)."""
    seconds = max(last["at"] - first["at"], 1e-6)
    out = {"machine": round((last["machine"] - first["machine"]) / seconds, 2)}
    for name, after in last["groups"].items():
        used = [b - a for a, b in zip(first["groups"][name], after, strict=True)]
        out[name] = round(sum(used) / seconds, 2)
        if name == "clients":
            out["client_max"] = round(max(used, default=0.0) / seconds, 2)
    # Whatever else ran meanwhile: Redis, the system, other work on the machine.
    out["others"] = round(out["machine"] - sum(out[name] for name in last["groups"]), 2)
    return out


def cpu_seconds(first: dict, last: dict, name: str) -> float:
    """CPU seconds one group used between two snapshots."""
    return sum(last["groups"][name]) - sum(first["groups"][name])


async def step(
    server: Server, fleet: Fleet, publisher: Publisher, *, first: int, deliveries: int, mode: dict
) -> dict:
    """One step at `deliveries`/s: warm-up, then the measured window, then the wait."""
    clients = mode["clients"]
    rate = deliveries / clients
    warm = max(1, round(rate * mode["warmup_s"]))
    count = max(2, round(rate * mode["seconds"]))
    lo, hi = first + warm, first + warm + count - 1
    await fleet.window(lo, hi)
    groups = {"server": [server.pid], "clients": fleet.pids, "publisher": [os.getpid()]}
    start = time.monotonic() + 0.01
    await publisher.run(first, warm, rate, start, origin=first)
    before = cpu_snapshot(groups)
    published = await publisher.run(lo, count, rate, start, origin=first)
    scheduled_s = (hi - first) / rate
    late_end_s = time.monotonic() - (start + scheduled_s)
    got = await fleet.wait(mode["wait_s"])
    after = cpu_snapshot(groups)
    window_s = count / rate
    cores = cpu_cores(before, after)
    delivered = got["delivered"]
    held = late_end_s <= max(PUBLISHER_SLACK * scheduled_s, 1 / rate)
    out = {
        "deliveries_target": deliveries,
        "frames_per_s": round(rate, 2),
        "frames": count,
        "window_s": round(window_s, 2),
        **got,
        "deliveries_per_s": round(delivered / window_s),
        "publisher": {**published, "late_end_ms": round(late_end_s * 1000, 1), "held": held},
        "cpu_cores": cores,
        "server_us_per_delivery": _per_delivery(cpu_seconds(before, after, "server"), delivered),
        "client_us_per_delivery": _per_delivery(cpu_seconds(before, after, "clients"), delivered),
        "server_rss_kb": server.rss_kb(),
        "next_seq": hi + 1,
    }
    out["passed"] = (
        got["missing"] == 0
        and got["closed"] == 0
        and got["out_of_order"] == 0
        and got["p99_ms"] is not None
        and got["p99_ms"] <= STEP_P99_MS
        and held
    )
    out["bound"] = bottleneck(out)
    return out


def _per_delivery(cpu_s: float, delivered: int) -> float | None:
    return round(cpu_s / delivered * 1e6, 1) if delivered else None


def bottleneck(step: dict) -> str:
    """Which side was at its limit in a step: the question is whether it was the server."""
    cpu = step["cpu_cores"]
    lag = step["client_loop_lag_ms"]["p99"] or 0.0
    if cpu["client_max"] >= 0.95:
        return "clients"
    if cpu["server"] >= 0.8:
        return "server"
    # A full machine makes every event loop late; only a late loop on a machine with
    # room to spare is the clients' own doing.
    if cpu["machine"] >= 1.8:
        return "machine"
    if lag > 100:
        return "clients"
    return "none"


async def run_server(kind: str, mode: dict, redis_url: str, budget_end: float, out: dict) -> None:
    """Connect, check, step up; figures go into `out` as they come (a timeout keeps them)."""
    prefix = f"{os.environ.get('REDIS_PREFIX', 'bench')}-baseline-{uuid.uuid4().hex[:8]}"
    server = Server(kind, redis_url, prefix)
    publisher = Publisher(kind, redis_url, prefix)
    fleet: Fleet | None = None
    try:
        await server.start()
        out["rss_start_kb"] = server.rss_kb()
        fleet = Fleet(
            await asyncio.gather(
                *(
                    ClientProcess.start(server.port, mode["budget_s"] + 60, mode["client_loop"])
                    for _ in range(CLIENT_PROCESSES)
                )
            )
        )
        out["connect"] = await fleet.open(mode["clients"])
        out["rss_connected_kb"] = server.rss_kb()
        print(f"{kind}: {out['connect']}", flush=True)
        if out["connect"]["open"] < mode["clients"]:
            raise RuntimeError(f"only {out['connect']['open']} of {mode['clients']} connected")
        # The path works end to end before anything is measured (and is warm).
        await fleet.window(1, 3)
        await publisher.run(1, 3, 10.0, time.monotonic(), origin=1)
        check = await fleet.wait(10.0)
        if check["missing"]:
            raise RuntimeError(f"path check: {check['missing']} frames missing")
        first = 4
        for deliveries in mode["steps"][kind]:
            # A passing step's length; a failing one may run wait_s longer, and is the last.
            expected_s = mode["warmup_s"] + mode["seconds"] + 1.0
            if time.monotonic() + expected_s > budget_end:
                out["stopped"] = f"time budget, before {deliveries:,}/s"
                break
            result = await step(
                server, fleet, publisher, first=first, deliveries=deliveries, mode=mode
            )
            first = result.pop("next_seq")
            out["steps"].append(result)
            print(f"{kind}: {step_line(result)}", flush=True)
            if not result["passed"]:
                out["stopped"] = f"first failing step, {deliveries:,}/s"
                break
        else:
            out["stopped"] = "every step passed"
    except Exception as exc:  # one server failing does not lose the other's figures
        out["error"] = repr(exc)
        print(f"{kind}: failed: {exc!r}", flush=True)
    finally:
        if fleet is not None:
            await fleet.stop()
        server.stop()
        await publisher.close()


def step_line(s: dict) -> str:
    cpu = s["cpu_cores"]
    return (
        f"{s['deliveries_target']:>7,}/s ({s['frames_per_s']:g} frames/s): delivered"
        f" {s['deliveries_per_s']:,}/s p50 {fmt_ms(s['p50_ms'])} p99 {fmt_ms(s['p99_ms'])} max"
        f" {fmt_ms(s['max_ms'])} ms, missing {s['missing']}, publisher late"
        f" {s['publisher']['late_end_ms']} ms; cores server {cpu['server']} clients"
        f" {cpu['clients']} (max {cpu['client_max']}) machine {cpu['machine']}; client loop"
        f" p99 {fmt_ms(s['client_loop_lag_ms']['p99'])} ms; server"
        f" {s['server_us_per_delivery']} us/delivery -> "
        + ("pass" if s["passed"] else f"FAIL (bound: {s['bound']})")
    )


# -- results ---------------------------------------------------------------------------------


def sustained(data: dict, server: str) -> float | None:
    """The best deliveries/s a baseline sustained (a passing step), or None."""
    run = data.get("servers", {}).get(server)
    passed = [s["deliveries_per_s"] for s in (run or {}).get("steps", []) if s["passed"]]
    return float(max(passed)) if passed else None


def fmt_ms(value) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _range(pair: tuple) -> str:
    return f"{pair[0]:,} to {pair[1]:,}"


def _step_at(run: dict, deliveries: int) -> dict | None:
    return next((s for s in run["steps"] if s["deliveries_target"] == deliveries), None)


def _p99_at(step: dict | None, deliveries: int) -> str:
    return f"{fmt_ms(step['p99_ms'])} ms at {deliveries:,}/s" if step else "-"


def report_section(data: dict) -> list[str]:
    """This scenario's part of docs/benchmarks.md."""
    m = data["machine"]
    quick = data["mode"] == "quick"
    lines = [
        "## Baselines: a plain Channels consumer and a bare websockets broadcast",
        "",
        f"Measured {m['date']} on {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}"
        f" (`python -m bench.baselines{' --quick' if quick else ''}`,"
        f" {data['duration_s']:.0f} s; load average {data['load_average'][0]:.2f} before)."
        f" No database: {data['clients']:,} WebSocket clients in {data['client_processes']}"
        " processes on the same cores, one server process, pre-encoded 172-byte frames"
        " published at a fixed rate through Redis on loopback (`group_send` on"
        " `RedisPubSubChannelLayer` for the consumer, `PUBLISH` for the broadcast);"
        " latency from the publisher's stamp to the client's receipt. A step passes when"
        f" every frame reaches every client, p99 is at most {STEP_P99_MS / 1000:g} s and the"
        " publisher holds its rate; the steps stop at the first that fails. *Missing*: frames"
        f" of the measured window not at a client {data['wait_s']:g} s after the last was"
        " published."
        " CPU is in cores (1.0 = one core busy), read from /proc from the window's first frame"
        " until every client had its last (or the wait ended); *others* is the rest of the"
        " machine's (Redis, the system, other work); per delivery it is the server's CPU"
        " over the frames delivered in the window.",
        "",
        "| baseline | sustained deliveries/s | issue #5 reference | p99 at the reference"
        " point | reference p99 | server CPU per delivery | server RSS |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, run in data["servers"].items():
        ref = REFERENCE[kind]
        best = sustained(data, kind)
        at = _step_at(run, ref["p99_at"])
        per = [s["server_us_per_delivery"] for s in run["steps"] if s["server_us_per_delivery"]]
        lines.append(
            f"| {run['label']} | {f'{best:,.0f}' if best else 'none'} |"
            f" {_range(ref['deliveries_per_s'])} |"
            f" {_p99_at(at, ref['p99_at'])} |"
            f" {ref['p99_ms'][0]:g} to {ref['p99_ms'][1]:g} ms |"
            f" {f'{min(per):.0f} to {max(per):.0f} us' if per else '-'} |"
            f" {run.get('rss_connected_kb', 0) / 1024:.0f} MB with the clients connected |"
        )
    for run in data["servers"].values():
        lines += [
            "",
            f"{run['label']}, {run['clients']:,} clients ({run.get('stopped', 'stopped')}):",
            "",
            "| deliveries/s asked | frames/s | delivered/s | p50 ms | p99 ms | max ms | missing"
            " | publisher late ms | CPU server / clients (busiest) / others / machine"
            " | server us per delivery | client loop lag p99 ms | server RSS | passed |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"
            " --- |",
        ]
        for s in run["steps"]:
            cpu = s["cpu_cores"]
            lines.append(
                f"| {s['deliveries_target']:,} | {s['frames_per_s']:g} |"
                f" {s['deliveries_per_s']:,} | {fmt_ms(s['p50_ms'])} | {fmt_ms(s['p99_ms'])} |"
                f" {fmt_ms(s['max_ms'])} | {s['missing']} | {s['publisher']['late_end_ms']:.0f} |"
                f" {cpu['server']} / {cpu['clients']} ({cpu['client_max']}) / {cpu['others']} /"
                f" {cpu['machine']} |"
                f" {s['server_us_per_delivery']} | {fmt_ms(s['client_loop_lag_ms']['p99'])} |"
                f" {s['server_rss_kb'] / 1024:.0f} MB | {'yes' if s['passed'] else 'no'} |"
            )
    lines += ["", *baseline_notes(data), ""]
    return lines


def baseline_notes(data: dict) -> list[str]:
    notes = []
    if data["mode"] == "quick":
        notes.append(
            f"- Quick run: {data['clients']:,} clients, not the reference's 2,000; the"
            " figures are for development, not for comparison with the issue's."
        )
    for run in data["servers"].values():
        steps = run["steps"]
        if "error" in run:
            notes.append(f"- {run['label']}: the run failed ({run['error']}).")
        if not steps:
            continue
        busiest = max(steps, key=lambda s: s["cpu_cores"]["client_max"])
        lag = max((s["client_loop_lag_ms"]["p99"] or 0) for s in steps)
        last = steps[-1]
        line = (
            f"- {run['label']}: the busiest client process used"
            f" {busiest['cpu_cores']['client_max']} of a core, and no client event loop was"
            f" more than {lag:.0f} ms late at p99 in any step."
        )
        if not last["passed"]:
            line += (
                f" At the failing step ({last['deliveries_target']:,}/s) the server used"
                f" {last['cpu_cores']['server']} cores and the machine"
                f" {last['cpu_cores']['machine']} of {data['machine']['cores']}"
                f" ({last['cpu_cores']['others']} outside the server, clients and publisher):"
                f" bound by {BOUND_TEXT[last['bound']]}."
            )
        notes.append(line)
    others = max(
        (s["cpu_cores"]["others"] for run in data["servers"].values() for s in run["steps"]),
        default=0.0,
    )
    if others >= 0.2:
        notes.append(
            f"- Other work used up to {others} cores during a step (Redis, the system, or"
            " other processes on the machine): the figures may be low."
        )
    return notes


BOUND_TEXT = {
    "server": "the server (near a full core: it is one process)",
    "machine": "the machine (both cores busy, the clients' share included)",
    "clients": "the clients (a client process at a full core or its event loop late)",
    "none": "nothing at its limit (latency without a saturated process)",
}


# -- main ------------------------------------------------------------------------------------


def redis_url_loopback() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        sys.exit("REDIS_URL is not set")
    if urlparse(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"REDIS_URL must be on loopback, not {urlparse(url).hostname}")
    return url


async def run_all(servers: list[str], mode: dict, redis_url: str) -> dict:
    started = time.monotonic()
    budget_end = started + mode["budget_s"]
    runs = {}
    for index, kind in enumerate(servers):
        # Each server gets an equal share of what is left of the budget; its steps stop
        # when the next would not fit, and the timeout is there if something hangs.
        share_s = (budget_end - time.monotonic()) / (len(servers) - index)
        out = runs[kind] = {
            "server": kind,
            "label": LABELS[kind],
            "clients": mode["clients"],
            "steps": [],
        }
        try:
            await asyncio.wait_for(
                run_server(kind, mode, redis_url, time.monotonic() + share_s, out),
                share_s + OVERRUN_S,
            )
        except TimeoutError:
            out["error"] = f"timed out after {share_s + OVERRUN_S:.0f} s"
            print(f"{kind}: {out['error']}", flush=True)
        out["sustained_deliveries_per_s"] = sustained({"servers": {kind: out}}, kind)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 clients, shorter steps")
    parser.add_argument("--server", action="append", choices=SERVERS, help="repeatable")
    parser.add_argument("--clients", type=int, help="default 2000, quick 500")
    parser.add_argument(
        "--client-loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="the clients' event loop (uvloop when installed)",
    )
    args = parser.parse_args()
    mode = dict(QUICK if args.quick else FULL, client_loop=args.client_loop)
    if args.clients:
        mode["clients"] = args.clients
    servers = args.server or list(SERVERS)
    redis_url = redis_url_loopback()
    stop_on_sigterm()
    load = os.getloadavg()
    started = time.monotonic()
    runs = asyncio.run(run_all(servers, mode, redis_url))
    data = {
        "mode": "quick" if args.quick else "full",
        "clients": mode["clients"],
        "client_processes": CLIENT_PROCESSES,
        "client_loop": mode["client_loop"],
        "warmup_s": mode["warmup_s"],
        "seconds_s": mode["seconds"],
        "wait_s": mode["wait_s"],
        "step_p99_ms": STEP_P99_MS,
        "load_average": [round(v, 2) for v in load],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "duration_s": round(time.monotonic() - started, 1),
        "servers": runs,
        "reference": REFERENCE,
    }
    path = result_write("baselines", data)
    for kind in runs:
        print(f"{kind}: sustained {sustained(data, kind)} deliveries/s")
    print(f"wrote {path} in {data['duration_s']:.0f} s")


if __name__ == "__main__":
    main()
