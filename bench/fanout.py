"""Fan-out: one change to every subscriber of one context, and deliveries per second.

The real stack (one web server process, `run_publisher`) on the bench database, as in
bench/latency.py; N WebSocket clients (5,000, or 1,000 with --quick) in several load
generator processes all follow one company's context.

1. One change, repeated: the writer commits a single-row update of one of the company's
   emission records (stamped with its time, as by bench/harness.py's Writer) and every client
   records when the item arrived; per change: how many clients got it, p50/p99, and the
   time until the last one had it. Repeated with a pause between changes.
2. Deliveries per second: bursts of changes to that context at increasing rates (each a
   few seconds) until the clients fall behind: a step is sustained when nothing is lost,
   p99 stays under STEP_P99_MS and every client reached the head within STEP_DRAIN_S of
   the last change. A delivery is one frame handed to one client; the publisher gathers
   the changes of each ~30 ms cycle into one frame per context, so at high change rates
   frames carry several items and the frame rate per context levels off.

    python -m bench.fanout             # 5,000 clients, daphne and uvicorn side by side
    python -m bench.fanout --quick     # 1,000 clients, daphne
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench.common import RESULTS, bench_database_ready, result_write, verdict
from bench.harness import (
    POOL_YEAR,
    PRODUCT_SERVER,
    SERVERS,
    Fleet,
    Stack,
    Writer,
    active_connections_tidy,
    cell_line,
    loadgens_for,
    measure,
    reports_merge,
    stop_on_sigterm,
    uvicorn_missing,
    vacuum_churned,
)

TARGET_ALL_WITHIN_MS = 250.0
TARGET_DELIVERIES = 50_000
STEP_P99_MS = 500.0
STEP_DRAIN_S = 2.0

COMPANY_SQL = """
SELECT c.id::text, array_agg(e.id::text ORDER BY e.year)
  FROM companies c JOIN emission_records e ON e.company_id = c.id
 WHERE c.is_public AND e.verification_status <> 'rejected'
   AND e.total_tonnes BETWEEN 10000 AND 300000
   AND EXISTS (SELECT 1 FROM emission_records x WHERE x.company_id = c.id AND x.year = %s)
 GROUP BY c.id HAVING count(*) >= 3
 ORDER BY md5(c.id::text || %s) LIMIT 1
"""


def fanout_company(database_url: str, seed: int) -> tuple[str, list[str]]:
    """A public company with a few visible emission records: (id, record ids)."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(COMPANY_SQL, [POOL_YEAR, str(seed)]).fetchone()


def per_change_figures(values_ms: list[float], clients: int) -> dict:
    values = sorted(values_ms)
    return {
        "delivered": len(values),
        "first_ms": round(values[0], 1),
        "p50_ms": round(values[len(values) // 2], 1),
        "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))], 1),
        "last_ms": round(values[-1], 1),
        "all_delivered": len(values) >= clients,
    }


def run_server(server: str, database_url: str, args, workdir: Path) -> dict:
    company, records = fanout_company(database_url, args.seed)
    context = f"company:{company}"
    rng = random.Random(args.seed)
    active_connections_tidy(database_url)
    vacuum_churned(database_url)
    stack = Stack(server, database_url, workdir, gc_trace=args.gc_trace).start()
    fleet = Fleet(stack.ws_url, database_url, workdir, timeout=args.loadgen_timeout)
    writer = Writer(database_url)
    out: dict = {"server": server, "clients": args.clients, "context": context}
    try:
        connected = fleet.add(
            [[context]] * args.clients,
            loadgens_for(args.clients),
            ready_timeout=60 + args.clients / 15,
        )
        out.update(
            connected=connected["connected"],
            connect_s=connected["connect_s"],
            loadgens=len(fleet.processes),
        )
        print(
            f"{server}: {connected['connected']}/{args.clients} clients on {context} in "
            f"{connected['connect_s']} s",
            flush=True,
        )
        # A first change wakes every path up (and is not counted).
        writer.change(records[0], False)
        time.sleep(1.0)
        fleet.drain(10)

        seq_lo = writer.head_seq()
        from_ns = time.time_ns()
        stamps = []
        for i in range(args.repeat):
            stamps.append(writer.change(records[i % len(records)], False)[0])
            time.sleep(args.pause)
        stack.publisher_idle()
        drained = fleet.drain(10)
        window = {
            "label": "one-change",
            "from_ns": from_ns,
            "to_ns": writer.last_stamp_ns,
            "seq_lo": seq_lo,
            "seq_hi": writer.head_seq(),
            "per_change": True,
        }
        merged = reports_merge(fleet.report(window))
        per_change = merged.pop("per_change", {})
        changes = [
            per_change_figures([us / 1000 for us in per_change.get(stamp, [])], args.clients)
            for stamp in stamps
        ]
        for number, change in enumerate(changes, 1):
            print(f"  change {number}: {change}", flush=True)
        out["one_change"] = {
            "repeat": args.repeat,
            "pause_s": args.pause,
            "changes": changes,
            "last_ms_median": statistics.median(c["last_ms"] for c in changes),
            "last_ms_max": max(c["last_ms"] for c in changes),
            "p50_ms_median": statistics.median(c["p50_ms"] for c in changes),
            "first_ms_median": statistics.median(c["first_ms"] for c in changes),
            "all_delivered": all(c["all_delivered"] for c in changes),
            "lost": merged["lost"],
            "duplicates": merged["duplicates"],
            "gaps": merged["gaps"],
            "drain_s": drained["s"],
            "web_rss_kb": stack.rss_kb(),
            "web_gc": stack.gc_pauses(from_ns / 1e9, writer.last_stamp_ns / 1e9 + 2),
        }

        steps = []
        out["steps"] = steps
        for rate in args.rates:
            try:
                cell = measure(
                    stack,
                    fleet,
                    writer,
                    rate=rate,
                    warmup=1.0,
                    seconds=args.seconds,
                    pick=lambda: (rng.choice(records), False),
                    label=f"{server}-fanout-{rate}",
                )
            except Exception as exc:
                # An overloaded server that stops answering ends the steps, not the run.
                print(f"{server}, {rate}/s: failed: {exc!r}", flush=True)
                out["step_error"] = {"rate": rate, "error": repr(exc)}
                break
            cell.update(server=server, clients=args.clients)
            cell["sustained"] = (
                cell["lost"] == 0
                and cell["behind_after_drain"] == 0
                and cell["p99_ms"] is not None
                and cell["p99_ms"] <= STEP_P99_MS
                and cell["drain_s"] <= STEP_DRAIN_S
            )
            print(cell_line(cell) + f" sustained={cell['sustained']}", flush=True)
            steps.append(cell)
            if not cell["sustained"]:
                break
        sustained = [s for s in steps if s["sustained"]]
        best = max(sustained, key=lambda s: s["deliveries_per_s"], default=None)
        out["max_sustained_deliveries_per_s"] = best["deliveries_per_s"] if best else 0
        out["max_sustained_rate"] = best["rate"] if best else None
    finally:
        writer.close()
        stack.stop()
        fleet.stop()
    return out


def report_section(data: dict) -> list[str]:
    """This scenario's part of docs/benchmarks.md."""
    m = data["machine"]
    runs = [run for run in data["runs"] if "one_change" in run]
    lines = [
        "## Fan-out and deliveries per second",
        "",
        f"Measured {m['date']} on {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}"
        f" (`python -m bench.fanout{' --quick' if data['mode'] == 'quick' else ''}`, "
        f"{data['duration_s'] / 60:.1f} min): one web server process and `run_publisher` on"
        " the bench database; every client follows the same company context, spread over"
        " several load generator processes on the same machine. Latency is from the time"
        " stamped into the row just before the autocommitted UPDATE to the client's receipt.",
        "",
        "| figure | target | measured | |",
        "| --- | --- | --- | --- |",
    ]
    for run in runs:
        one = run["one_change"]
        ok = one["all_delivered"] and one["last_ms_max"] <= TARGET_ALL_WITHIN_MS
        lines.append(
            f"| fan-out, one change to {run['clients']:,} subscribers of one context,"
            f" {run['server']} | all delivered within 250 ms | last client after"
            f" {one['last_ms_median']:.0f} ms (median of {one['repeat']}), worst"
            f" {one['last_ms_max']:.0f} ms; first {one.get('first_ms_median', 0):.0f} ms, p50"
            f" {one['p50_ms_median']:.0f} ms;"
            f" {'all' if one['all_delivered'] else 'not all'} delivered | {verdict(ok)} |"
        )
    for run in runs:
        best = run["max_sustained_deliveries_per_s"]
        if best:
            measured = (
                f"{best:,} sustained ({run['clients']:,} clients,"
                f" {run['max_sustained_rate']:g} changes/s)"
            )
        else:
            first = run["steps"][0] if run["steps"] else None
            measured = "none sustained" + (
                f" (already at {first['rate']:g} change(s)/s: {first['deliveries_per_s']:,}"
                f" deliveries/s, p99 {fmt_ms(first['p99_ms'])} ms)"
                if first
                else ""
            )
        peak = max((s["deliveries_per_s"] for s in run["steps"]), default=0)
        if peak > best and best:
            measured += f"; {peak:,}/s delivered while falling behind"
        lines.append(
            f"| deliveries per second, one server process, {run['server']} | 50,000 or more |"
            f" {measured} | {verdict(best >= TARGET_DELIVERIES)} |"
        )
    lines += [
        "",
        f"A step is sustained when nothing is lost, p99 stays under {STEP_P99_MS:.0f} ms and"
        f" every client reached the head within {STEP_DRAIN_S:.0f} s of the last change"
        " (*caught up*);"
        " the steps stop at the first that is not. CPU in cores over the step (machine total"
        " 2.0).",
        "",
        "| server | clients | changes/s | deliveries/s | items/s | p50 ms | p99 ms | max ms |"
        " lost | caught up s | web RSS | CPU web / loadgens / machine | sustained |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for run in runs:
        for s in run["steps"]:
            cpu = s["cpu_cores"]
            lines.append(
                f"| {run['server']} | {run['clients']:,} | {s['rate']:g} |"
                f" {s['deliveries_per_s']:,} | {s['items_per_s']:,} | {fmt_ms(s['p50_ms'])} |"
                f" {fmt_ms(s['p99_ms'])} | {fmt_ms(s['max_ms'])} | {s['lost']} |"
                f" {s['drain_s']:.1f} |"
                f" {s['web_rss_kb'] / 1024:.0f} MB | {cpu['web']} / {cpu['loadgens']} /"
                f" {cpu['machine']} | {'yes' if s['sustained'] else 'no'} |"
            )
    lines += ["", *fanout_notes(data), *baseline_notes(data), *ceiling_notes(data), ""]
    return lines


def ceiling_notes(data: dict) -> list[str]:
    """What bounds deliveries/s on this machine, from the steps' CPU: the server's CPU
    per delivery gives one process's ceiling (one core), the load generators' share of the
    same two cores gives the machine's."""
    notes = []
    for run in [run for run in data["runs"] if "one_change" in run]:
        steps = [s for s in run["steps"] if s["deliveries_per_s"]]
        if not steps:
            continue
        server_us = statistics.median(
            s["cpu_cores"]["web"] / s["deliveries_per_s"] * 1e6 for s in steps
        )
        client_us = statistics.median(
            s["cpu_cores"]["loadgens"] / s["deliveries_per_s"] * 1e6 for s in steps
        )
        cores = data["machine"]["cores"]
        notes.append(
            f"- {run['server']}: what bounds it here. The server spent {server_us:.0f} us of CPU"
            f" per delivery, so one process, given a whole core, tops out near"
            f" {1e6 / server_us:,.0f}/s; the load generators, on the same {cores} cores, spent"
            f" {client_us:.0f} us per delivery receiving, parsing and checking each frame, so"
            f" the machine runs out at about {cores * 1e6 / (server_us + client_us):,.0f}/s"
            f" whatever the server does. 50,000/s from one process needs at most"
            f" {1e6 / TARGET_DELIVERIES:.0f} us per delivery and the clients on other cores;"
            " on this stack that means a second server process (the hub design scales out"
            " behind a load balancer: each process receives each frame once) or a lighter"
            " send path per connection."
        )
    return notes


def baseline_notes(data: dict) -> list[str]:
    """The product's deliveries/s and CPU per delivery as ratios to the baselines
    (bench/baselines.py) measured in the same `make bench`."""
    path = RESULTS / "baselines.json"
    if not path.exists():
        return []
    from bench.baselines import sustained

    base = json.loads(path.read_text())
    clients = base.get("clients")
    cpu = {
        name: statistics.median(
            s["server_us_per_delivery"] for s in run["steps"] if s["server_us_per_delivery"]
        )
        for name, run in base.get("servers", {}).items()
        if any(s["server_us_per_delivery"] for s in run["steps"])
    }
    notes = []
    for run in [run for run in data["runs"] if "one_change" in run]:
        best = run["max_sustained_deliveries_per_s"]
        per = [
            s["cpu_cores"]["web"] / s["deliveries_per_s"] * 1e6
            for s in run["steps"]
            if s["deliveries_per_s"]
        ]
        parts = []
        for name, label in (
            ("channels", "a plain Channels consumer per connection"),
            ("websockets", "a bare `websockets` broadcast"),
        ):
            rate = sustained(base, name)
            if rate and best:
                parts.append(f"{best / rate:.2f}x the deliveries/s of {label} ({rate:,.0f}/s)")
            if per and name in cpu:
                parts.append(
                    f"{statistics.median(per) / cpu[name]:.1f}x its server CPU per delivery"
                    f" ({statistics.median(per):.0f} against {cpu[name]:.0f} us)"
                )
        if parts:
            notes.append(
                f"- {run['server']} against the baselines ({clients:,} clients there,"
                f" {run['clients']:,} here): " + "; ".join(parts) + "."
            )
    return notes


def fanout_notes(data: dict) -> list[str]:
    notes = []
    for run in [run for run in data["runs"] if "one_change" in run]:
        one = run["one_change"]
        spread = statistics.median(c["last_ms"] - c["p50_ms"] for c in one["changes"])
        steps = run["steps"]
        busiest = max(steps, key=lambda s: s["cpu_cores"]["loadgen_max"], default=None)
        line = (
            f"- {run['server']}: {run['clients']:,} clients in {run['loadgens']} load generators"
            f" (connected in {run['connect_s']:.0f} s). One change: half the clients had it"
            f" after {one['p50_ms_median']:.0f} ms and the last {spread:.0f} ms later (median"
            " over the repetitions)."
        )
        if busiest:
            web_us = [
                s["cpu_cores"]["web"] / s["deliveries_per_s"] * 1e6
                for s in steps
                if s["deliveries_per_s"]
            ]
            if web_us:
                line += (
                    f" Server CPU per delivery (all its CPU over the deliveries)"
                    f" {min(web_us):.0f} to {max(web_us):.0f} us over the steps;"
                )
            line += (
                f" the busiest load generator used"
                f" {busiest['cpu_cores']['loadgen_max']}"
                f" of a core, its event loop at worst p99"
                f" {busiest['loadgen_loop_lag_ms']['p99']:.0f} ms late."
            )
        gc = one.get("web_gc")
        if gc and gc["full_collections"]:
            line += (
                f" Meanwhile the server made {gc['full_collections']} full garbage"
                f" collection(s), up to {gc['full_max_ms']:.0f} ms each (`--gc-trace`)."
            )
        notes.append(line)
    others = max(
        (s["cpu_cores"].get("others", 0) for run in data["runs"] for s in run.get("steps", [])),
        default=0,
    )
    if others >= 0.2:
        notes.append(
            f"- Other work ran on the machine meanwhile: up to {others} cores outside the stack"
            " and the load generators in one step."
        )
    for run in data["runs"]:
        if "step_error" in run:
            error = run["step_error"]
            notes.append(
                f"- {run['server']}: the step at {error['rate']:g} changes/s failed"
                f" ({error['error']})."
            )
    for error in data.get("errors", []):
        notes.append(f"- {error['server']}: the run failed ({error['error']}).")
    notes += data.get("notes", [])
    return notes


def fmt_ms(value) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 clients, uvicorn")
    parser.add_argument("--clients", type=int, help="default 5000, quick 1000")
    parser.add_argument("--repeat", type=int, help="single changes (default 10, quick 5)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between them")
    parser.add_argument("--rates", type=_floats, help="changes/s of the burst steps")
    parser.add_argument("--seconds", type=float, help="per burst step (default 5, quick 3)")
    parser.add_argument(
        "--server",
        action="append",
        choices=SERVERS,
        help="repeatable (default uvicorn and daphne, quick uvicorn)",
    )
    parser.add_argument("--companies", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--loadgen-timeout", type=float, default=1200)
    parser.add_argument("--gc-trace", action="store_true")
    args = parser.parse_args()
    quick = args.quick
    args.clients = args.clients or (1000 if quick else 5000)
    args.rates = args.rates or (
        [5, 10, 15, 20, 30, 40, 60] if quick else [1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20]
    )
    args.seconds = args.seconds or (3.0 if quick else 5.0)
    args.repeat = args.repeat or (5 if quick else 10)
    servers = args.server or ([PRODUCT_SERVER] if quick else list(SERVERS))
    if "uvicorn" in servers and uvicorn_missing():
        sys.exit("uvicorn is not installed: pip install 'uvicorn[standard]>=0.30,<1'")

    stop_on_sigterm()
    started = time.monotonic()
    database_url = bench_database_ready(companies=args.companies)
    runs: list[dict] = []
    errors: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        workdir = Path(os.environ.get("BENCH_LOG_DIR") or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for server in servers:
            try:
                runs.append(run_server(server, database_url, args, workdir))
            except Exception as exc:
                print(f"{server}: failed: {exc!r}", flush=True)
                errors.append({"server": server, "error": repr(exc)})
    data = {
        "mode": "quick" if quick else "full",
        "servers": servers,
        "clients": args.clients,
        "rates": args.rates,
        "duration_s": round(time.monotonic() - started, 1),
        "runs": runs,
        "errors": errors,
        "notes": [],
    }
    path = result_write("fanout", data)
    print(f"wrote {path} in {data['duration_s']:.0f} s")


if __name__ == "__main__":
    main()
