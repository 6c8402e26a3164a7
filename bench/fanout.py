"""Fan-out: one change to every subscriber of one context, and deliveries per second.

The real stack (one web server process, `run_publisher`) on the bench database, as in
bench/latency.py; N WebSocket clients (5,000, or 1,000 with --quick) in several load
generator processes all follow one company's context.

1. One change, repeated: the writer commits a single-row update of one of the company's
   emission records (stamped with its time, as by bench/harness/writer.py's Writer) and every client
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

import random
import statistics
import time
from pathlib import Path

import psycopg

from bench.common import bench_database_ready
from bench.harness.cell import cell_line, measure, reports_merge
from bench.harness.fleet import Fleet, loadgens_for
from bench.harness.processes import stop_on_sigterm
from bench.harness.scenario import (
    floats,
    logs_directory,
    results_write,
    scenario_parser,
    stack_teardown,
    uvicorn_required,
)
from bench.harness.stack import (
    PRODUCT_SERVER,
    SERVERS,
    Stack,
    active_connections_tidy,
    vacuum_churned,
)
from bench.harness.writer import POOL_YEAR, Writer

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
        stack_teardown(writer, stack, fleet)
    return out


def main() -> None:
    parser = scenario_parser(__doc__, quick="1,000 clients, uvicorn")
    parser.add_argument("--clients", type=int, help="default 5000, quick 1000")
    parser.add_argument("--repeat", type=int, help="single changes (default 10, quick 5)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between them")
    parser.add_argument("--rates", type=floats, help="changes/s of the burst steps")
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
    uvicorn_required(servers)

    stop_on_sigterm()
    started = time.monotonic()
    database_url = bench_database_ready(companies=args.companies)
    runs: list[dict] = []
    errors: list[dict] = []
    with logs_directory("fanout") as logs:
        for server in servers:
            try:
                runs.append(run_server(server, database_url, args, logs))
            except Exception as exc:
                print(f"{server}: failed: {exc!r}", flush=True)
                errors.append({"server": server, "error": repr(exc)})
    data = {
        "servers": servers,
        "clients": args.clients,
        "rates": args.rates,
        "runs": runs,
        "errors": errors,
        "notes": [],
    }
    results_write("fanout", data, quick=args.quick, started=started)


if __name__ == "__main__":
    main()
