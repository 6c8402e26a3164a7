"""Scale-out: one web process against one and two behind HAProxy, on the same load.

Three stacks on the bench database, one after another, each with `run_publisher`:

- `direct`: one web process, clients connect to it (as in bench/latency.py);
- `haproxy-1`: the same process behind HAProxy (config/haproxy.py's configuration, as
  `WEB_PROCESSES=N make run` starts it), which prices the proxy alone;
- `haproxy-2`: two web processes behind HAProxy, clients spread by leastconn.

The same clients (60% on 100 companies, 30% on 10 industries, 10% the overview) and the
same writer (bench/harness/writer.py) at each rate; figures per cell as bench/latency.py
takes them: deliveries/s, commit-to-client p50/p99, loss, and CPU by process group, from
which HAProxy's CPU per delivery (microseconds of one core) follows.

    python -m bench.scale_out            # 2,000 clients at 200 and 400 changes/s
    python -m bench.scale_out --quick    # 500 clients at 100 and 200 changes/s
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench.common import bench_database_ready
from bench.harness.cell import cell_line
from bench.harness.fleet import Fleet
from bench.harness.processes import stop_on_sigterm
from bench.harness.scenario import (
    Rig,
    ints,
    logs_directory,
    results_write,
    scenario_parser,
    stack_teardown,
    uvicorn_required,
    workload_arguments,
    workload_figures,
    workload_of,
)
from bench.harness.stack import PRODUCT_SERVER, Stack, active_connections_tidy, vacuum_churned
from bench.harness.tables import (
    CELL_COLUMNS,
    cell_columns,
    fmt_ms,
    mb,
    measured_by,
    table_head,
    table_row,
)
from bench.harness.writer import Workload, Writer
from config.haproxy import haproxy_binary

# name: (web processes, behind HAProxy)
TOPOLOGIES = {"direct": (1, False), "haproxy-1": (1, True), "haproxy-2": (2, True)}


def run_topology(
    name: str, database_url: str, workload: Workload, args, workdir: Path, errors: list
) -> list[dict]:
    processes, haproxy = TOPOLOGIES[name]
    active_connections_tidy(database_url)
    vacuum_churned(database_url)
    stack = Stack(PRODUCT_SERVER, database_url, workdir, web_processes=processes, haproxy=haproxy)
    fleet = Fleet(stack.ws_url, database_url, workdir, timeout=args.loadgen_timeout)
    writer = None
    cells: list[dict] = []
    try:
        stack.start()
        writer = Writer(database_url)
        ready = fleet.connect(workload.plan(args.clients))
        print(
            f"{name}: {ready['connected']}/{args.clients} clients in {ready['connect_s']} s",
            flush=True,
        )
        for cell in Rig(stack, fleet, writer, workload, args).at_rates(label=name):
            cell.update(
                server=name,
                topology=name,
                web_processes=processes,
                haproxy=haproxy,
                clients=args.clients,
                connected=cell["open"],
                connect_s=ready["connect_s"],
            )
            print(cell_line(cell), flush=True)
            cells.append(cell)
    except Exception as exc:
        print(f"{name}: failed: {exc!r}", flush=True)
        errors.append({"topology": name, "error": repr(exc)})
    finally:
        stack_teardown(writer, stack, fleet)
    return cells


def per_delivery_us(cores: float, deliveries_per_s: float) -> float | None:
    """Microseconds of one core a delivery cost a process group."""
    return round(cores * 1e6 / deliveries_per_s, 1) if deliveries_per_s else None


def medians_by_topology(cells: list[dict]) -> list[dict]:
    """Per topology and rate, the median of each figure over the rounds."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for cell in cells:
        groups.setdefault((cell["topology"], cell["rate"]), []).append(cell)
    out = []
    for (topology, rate), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        web = statistics.median(c["cpu_cores"]["web"] for c in group)
        haproxy = statistics.median(c["cpu_cores"].get("haproxy", 0) for c in group)
        deliveries = statistics.median(c["deliveries_per_s"] for c in group)
        out.append(
            {
                "topology": topology,
                "rate": rate,
                "rounds": len(group),
                "p50_ms": statistics.median(c["p50_ms"] for c in group),
                "p99_ms": statistics.median(c["p99_ms"] for c in group),
                "deliveries_per_s": deliveries,
                "web": round(web, 2),
                "haproxy": round(haproxy, 2),
                "web_us": statistics.median(
                    per_delivery_us(c["cpu_cores"]["web"], c["deliveries_per_s"]) for c in group
                ),
                "haproxy_us": statistics.median(
                    per_delivery_us(c["cpu_cores"].get("haproxy", 0), c["deliveries_per_s"])
                    for c in group
                ),
            }
        )
    return out


def report_section(data: dict) -> list[str]:
    """This scenario's part of docs/benchmarks.md."""
    medians = medians_by_topology(data["cells"])
    lines = [
        "## Scale-out: web processes behind HAProxy",
        "",
        f"{measured_by(data, 'scale_out')}: {data['clients']:,} WebSocket clients (60/30/10"
        " as in the commit-to-client section) on one web process reached directly"
        " (*direct*), the same process behind HAProxy (*haproxy-1*) and two behind it"
        " (*haproxy-2*, leastconn), with `run_publisher`, on this machine's two cores. The"
        " writer and its stamps are the commit-to-client section's. *µs / delivery* is CPU"
        " time of one core per delivery (a frame handed to one client): the web processes'"
        " summed, and HAProxy's (master and worker)."
        f" Medians of {data['rounds']} rounds, the topologies taking turns within each:",
        "",
        *table_head(
            "topology",
            "changes/s",
            "p50 ms",
            "p99 ms",
            "deliveries/s",
            "CPU web / haproxy (cores)",
            "µs / delivery web / haproxy",
        ),
        *(
            table_row(
                m["topology"],
                m["rate"],
                fmt_ms(m["p50_ms"]),
                fmt_ms(m["p99_ms"]),
                f"{m['deliveries_per_s']:,.0f}",
                f"{m['web']} / {m['haproxy']}",
                f"{fmt_ms(m['web_us'])} / {fmt_ms(m['haproxy_us'])}",
            )
            for m in medians
        ),
        "",
        "Every cell:",
        "",
        *table_head(
            "topology",
            *CELL_COLUMNS,
            "web RSS",
            "CPU web / haproxy / publisher / loadgens / postgres / machine",
            "µs / delivery web / haproxy",
        ),
    ]
    for c in sorted(data["cells"], key=lambda c: (c["rate"], c["topology"], c["round"])):
        cpu = c["cpu_cores"]
        lines.append(
            table_row(
                f"{c['topology']} (round {c['round']})",
                cell_columns(c),
                mb(c["web_rss_kb"]),
                f"{cpu['web']} / {cpu.get('haproxy', 0)} / {cpu['publisher']} /"
                f" {cpu['loadgens']} / {cpu['postgres']} / {cpu['machine']}",
                f"{fmt_ms(per_delivery_us(cpu['web'], c['deliveries_per_s']))} /"
                f" {fmt_ms(per_delivery_us(cpu.get('haproxy', 0), c['deliveries_per_s']))}",
            )
        )
    lines.append("")
    for error in data.get("errors", []):
        lines.append(f"- {error['topology']}: the run failed ({error['error']}).")
    return [*lines, ""] if data.get("errors") else lines


def main() -> None:
    parser = scenario_parser(__doc__, quick="500 clients at 100 and 200 changes/s")
    parser.add_argument("--clients", type=int, help="default 2000, quick 500")
    parser.add_argument("--rates", type=ints, help="changes/s, comma list (default 200,400)")
    parser.add_argument("--seconds", type=float, help="measured per cell (default 8, quick 5)")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, help="each topology this many times (3, quick 1)")
    parser.add_argument(
        "--topology", action="append", choices=tuple(TOPOLOGIES), help="repeatable (all)"
    )
    workload_arguments(parser)
    parser.add_argument("--loadgen-timeout", type=float, default=1800)
    args = parser.parse_args()
    args.clients = args.clients or (500 if args.quick else 2000)
    args.rates = args.rates or ([100, 200] if args.quick else [200, 400])
    args.seconds = args.seconds or (5.0 if args.quick else 8.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    topologies = args.topology or list(TOPOLOGIES)
    uvicorn_required()
    haproxy_binary()  # says how to install it, before anything starts

    stop_on_sigterm()
    started = time.monotonic()
    database_url = bench_database_ready(companies=args.companies)
    workload = workload_of(database_url, args)
    cells: list[dict] = []
    errors: list[dict] = []
    with logs_directory("scale_out") as logs:
        # Rounds interleave the topologies, so a slower minute of the machine does not
        # land on one topology alone; the report takes medians over them.
        for round_number in range(1, args.rounds + 1):
            for name in topologies:
                for cell in run_topology(name, database_url, workload, args, logs, errors):
                    cells.append({**cell, "round": round_number})
    data = {
        "topologies": topologies,
        "clients": args.clients,
        "rates": args.rates,
        "rounds": args.rounds,
        "warmup_s": args.warmup,
        "seconds_s": args.seconds,
        **workload_figures(args, cells),
        "cells": cells,
        "errors": errors,
    }
    results_write("scale_out", data, quick=args.quick, started=started)


if __name__ == "__main__":
    main()
