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
import os
import sys
import time
import uuid
from urllib.parse import urlparse

from bench.baseline_processes import ClientProcess, Fleet, Publisher, Server
from bench.common import result_write
from bench.harness.processes import machine_cpu, proc_cpu_s, stop_on_sigterm
from bench.harness.tables import fmt_ms

SERVERS = ("channels", "websockets")
LABELS = {
    "channels": "plain Channels consumer per connection (daphne)",
    "websockets": "bare websockets broadcast, no Django",
}
CLIENT_PROCESSES = 2
STEP_P99_MS = 1000.0
PUBLISHER_SLACK = 0.05  # the publisher may finish this share of the step late
OVERRUN_S = 10.0  # past its share of the time budget, a server's run is cut off

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


def sustained(data: dict, server: str) -> float | None:
    """The best deliveries/s a baseline sustained (a passing step), or None."""
    run = data.get("servers", {}).get(server)
    passed = [s["deliveries_per_s"] for s in (run or {}).get("steps", []) if s["passed"]]
    return float(max(passed)) if passed else None


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
