"""Commit to client over WebSocket, on the real stack.

One web server process (the product's: uvicorn as config/serve.py runs it; or daphne for
the side-by-side run, at the target's 2,000 clients unless --full-comparison) and
`manage.py run_publisher` run as processes against the bench database. Load generator
processes (bench/loadgen.py) open N WebSocket clients: 60% follow one of 100 companies,
30% one of 10 industries, 10% the overview. A writer thread commits single-row raw SQL
updates of emission records at a fixed rate: half of them to records of the 100
followed companies, half to records of any public company (so the followed industries
get their share), 10% of them moving the record's total by 10.7% (significant, so they
reach the overview too; the others move it by one tonne). Each update stamps its time
into the row (`source = 'bench:<time_ns>'`), taken just before the autocommitted UPDATE
is sent: the latency therefore includes the statement and its commit (their median is
reported). Clients read the stamp from the item's `fields`.

Per grid cell (clients x changes/s): warm-up, then a measured window, then the writer
stops, the publisher's backlog empties and every client's cursor reaches its context's
head (the drain), and each load generator checks what its clients received against the
change log (bench/loadgen.py). CPU of every process is read from /proc over the window.

    python -m bench.latency            # full grid on uvicorn, daphne at 2,000 clients
    python -m bench.latency --quick    # N 200 and 1,000 at 50 and 200 changes/s, uvicorn
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import bench_database_ready, verdict
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
from bench.harness.stack import (
    PRODUCT_SERVER,
    SERVERS,
    Stack,
    active_connections_tidy,
    vacuum_churned,
)
from bench.harness.tables import (
    CELL_COLUMNS,
    CPU_HEADER,
    by_kind_text,
    cell_columns,
    cpu_cell,
    fmt_ms,
    loadgen_note,
    mb,
    measured_by,
    table_head,
    table_row,
)
from bench.harness.writer import Workload, Writer

TARGET_P50_MS = 40.0
TARGET_P99_MS = 150.0
TARGET_CELL = (2000, 200)
TARGET_BUSY_DELIVERIES = 20_000  # "p99 delivery latency, 2,000 clients at 20,000 deliveries/s"


def run_server(
    server: str, database_url: str, workload: Workload, args, workdir: Path, errors: list
) -> list:
    """The grid on one stack: the smallest N connects first, each larger N adds clients
    (every group is itself 60/30/10), and each N runs every rate."""
    cells: list[dict] = []
    active_connections_tidy(database_url)
    vacuum_churned(database_url)
    stack = Stack(server, database_url, workdir, gc_trace=args.gc_trace)
    fleet = Fleet(stack.ws_url, database_url, workdir, timeout=args.loadgen_timeout)
    writer = None
    try:
        stack.start()
        writer = Writer(database_url)
        connect_s = 0.0
        for clients in sorted(grid_clients(server, args)):
            added = clients - fleet.clients
            ready = fleet.connect(workload.plan(added))
            connect_s += ready["connect_s"]
            print(
                f"{server}: {clients} clients ({ready['connected']}/{added} more connected"
                f" in {ready['connect_s']} s)",
                flush=True,
            )
            label = f"{server}-{clients}"
            for cell in Rig(stack, fleet, writer, workload, args).at_rates(label=label):
                cell.update(
                    server=server,
                    clients=clients,
                    connected=cell["open"],
                    connect_s=round(connect_s, 1),
                )
                print(cell_line(cell), flush=True)

                cells.append(cell)
    except Exception as exc:
        # A server that stopped answering should not cost the figures already taken.
        print(f"{server}: failed: {exc!r}", flush=True)
        errors.append({"server": server, "clients": fleet.clients, "error": repr(exc)})
    finally:
        stack_teardown(writer, stack, fleet)
    return cells


# -- the report section -------------------------------------------------------------------------


def _lag(publisher: dict) -> str:
    """Publisher lag, max over the window / at its end, as the status endpoint said."""
    end = publisher.get("lag_ms_end")
    text = f"{publisher['lag_ms_max']} / {'-' if end is None else end} ms"
    if publisher.get("status_unanswered"):
        text += f" ({publisher['status_unanswered']} status requests unanswered in 2 s)"
    return text


def report_section(data: dict) -> list[str]:
    """This scenario's part of docs/benchmarks.md."""
    cells = data["cells"]
    lines = [
        "## Commit to client (WebSocket)",
        "",
        f"{measured_by(data, 'latency')}: one web server process and `run_publisher` on the"
        " 100,000-company bench database, the clients in"
        f" {'/'.join(str(n) for n in sorted({c['loadgens'] for c in cells}))} load generator"
        " processes on the same machine, 60% of them on 100 companies, 30% on 10 industries,"
        " 10% on the overview. The writer commits single-row updates at a fixed rate (10% of"
        " them significant, so the overview gets them too) and stamps each with the time taken"
        " just before its autocommitted UPDATE is sent: latency is that stamp to the client's"
        " receipt, so it includes the statement and its commit"
        f" (median {data['statement_p50_ms']} ms).",
        "",
        "| figure | target | measured | |",
        "| --- | --- | --- | --- |",
    ]
    for server in data["servers"]:
        cell = next(
            (
                c
                for c in cells
                if c["server"] == server and (c["clients"], c["rate"]) == TARGET_CELL
            ),
            None,
        )
        if cell is None or cell["p99_ms"] is None:
            lines.append(
                f"| commit to client, WebSocket, 2,000 clients (60/30/10), 200 changes/s, {server}"
                " | p50 under 40 ms, p99 under 150 ms | not in this run's grid | |"
            )
            continue
        ok = cell["p50_ms"] < TARGET_P50_MS and cell["p99_ms"] < TARGET_P99_MS and not cell["lost"]
        lines.append(
            f"| commit to client, WebSocket, 2,000 clients (60/30/10), 200 changes/s, {server} | "
            f"p50 under 40 ms, p99 under 150 ms | p50 {fmt_ms(cell['p50_ms'])} ms, p99 "
            f"{fmt_ms(cell['p99_ms'])} ms, {cell['lost']} lost | {verdict(ok)} |"
        )
        busy = [
            c
            for c in cells
            if c["server"] == server
            and c["clients"] == 2000
            and c["deliveries_per_s"] >= TARGET_BUSY_DELIVERIES
        ]
        at_2000 = [c for c in cells if c["server"] == server and c["clients"] == 2000]
        if at_2000 and not busy:
            cell = max(at_2000, key=lambda c: c["deliveries_per_s"])
            lines.append(
                f"| p99 delivery latency, 2,000 clients at 20,000 deliveries/s, {server} |"
                f" under 150 ms | not reached: at most {cell['deliveries_per_s']:,}"
                f" deliveries/s ({cell['items_per_s']:,} items/s) at {cell['rate']} changes/s,"
                f" p99 {fmt_ms(cell['p99_ms'])} ms there | |"
            )
        if busy:
            cell = min(busy, key=lambda c: c["deliveries_per_s"])
            lines.append(
                f"| p99 delivery latency, 2,000 clients at 20,000 deliveries/s, {server} | "
                f"under 150 ms | {fmt_ms(cell['p99_ms'])} ms at {cell['deliveries_per_s']:,}"
                f" deliveries/s ({cell['rate']} changes/s) | "
                f"{verdict(cell['p99_ms'] is not None and cell['p99_ms'] < TARGET_P99_MS)} |"
            )
    lines += [
        "",
        "Every cell: "
        f"{data['warmup_s']:.0f} s warm-up, {data['seconds_s']:.0f} s measured, then the drain."
        " Deliveries are frames handed to a client (one batch of one context), items the"
        " changes in them; *lost* is a change in the log routed to a client's context that the"
        " client never received (nor got merged into a later change of the same record in the"
        " same frame), *dup* an item at or below what the client had, *gaps* a batch whose"
        " `prev_seq` was above the client's cursor, *caught up* the time from the last change"
        " until every client had its contexts' heads. *To published* is the stamp to the"
        " publisher's `processed_at` (from the log), the rest of the latency is the fan-out:"
        " publisher commit, Redis, the hub, the sends, the client. CPU in cores over the"
        " measured window (machine total 2.0; *others* is what the machine spent outside the"
        " stack, the load generators and the writer).",
        "",
        *table_head("server", *CELL_COLUMNS, "publisher lag max / end", "web RSS", CPU_HEADER),
    ]

    for c in cells:
        lines.append(
            table_row(
                c["server"],
                cell_columns(c),
                _lag(c["publisher"]),
                mb(c["web_rss_kb"]),
                cpu_cell(c["cpu_cores"]),
            )
        )
    lines += ["", *latency_notes(data), ""]
    return lines


def latency_notes(data: dict) -> list[str]:
    """What the WebSocket figures say beyond the tables: whether the load generators or
    other work held the server back, latency by context kind, collector pauses, failures."""

    cells = data["cells"]
    notes = []
    if cells:
        notes.append(
            loadgen_note(cells, lambda c: c["server"])
            + "; on two cores the generators also take CPU the server could"
            " have used (see the CPU column)."
        )
        others = max(c["cpu_cores"].get("others", 0) for c in cells)
        if others >= 0.2:
            notes.append(
                f"- Other work ran on the machine meanwhile: up to {others} cores outside the"
                " stack and the load generators in one window (*others*), which the server"
                " and the publisher could not use."
            )
    for server in data["servers"]:
        cell = next(
            (
                c
                for c in cells
                if c["server"] == server and (c["clients"], c["rate"]) == TARGET_CELL
            ),
            None,
        )
        if cell and cell.get("by_kind"):
            notes.append(f"- {server}, 2,000 clients at 200/s, by context: {by_kind_text(cell)}.")
    traced = [c for c in cells if c.get("web_gc")]
    if traced:
        worst = max(traced, key=lambda c: c["web_gc"]["full_max_ms"])
        notes.append(
            "- Full garbage collections of the web server (`--gc-trace`): up to"
            f" {worst['web_gc']['full_max_ms']:.0f} ms in one pause ({worst['server']},"
            f" {worst['clients']:,} clients); every frame waiting meanwhile is that much late."
        )
    for error in data.get("errors", []):
        notes.append(
            f"- {error['server']}, {error['clients']:,} clients: the run failed ({error['error']})."
        )
    notes += data.get("notes", [])
    return notes


# -- main -------------------------------------------------------------------------------------


def grid_clients(server: str, args: argparse.Namespace) -> list[int]:
    """The client counts a server runs: the whole grid for the product's server; for the
    comparison, the target's 2,000 (which keeps `make bench` within its 15 minutes)."""
    if server == PRODUCT_SERVER or args.full_comparison:
        return args.clients
    return [c for c in args.clients if c == TARGET_CELL[0]] or args.clients[:1]


def main() -> None:
    parser = scenario_parser(__doc__, quick="N 200, 1,000 at 50, 200/s, uvicorn")
    parser.add_argument(
        "--full-comparison", action="store_true", help="daphne over the whole grid too"
    )
    parser.add_argument("--clients", type=ints, help="comma list (default 1000,2000,5000)")
    parser.add_argument("--rates", type=ints, help="changes/s, comma list (default 50,200,500)")
    parser.add_argument("--seconds", type=float, help="measured per cell (default 8, quick 6)")
    parser.add_argument("--warmup", type=float, help="seconds before each cell (default 2)")
    parser.add_argument(
        "--server",
        action="append",
        choices=SERVERS,
        help="repeatable (default uvicorn and daphne, quick uvicorn)",
    )
    workload_arguments(parser)
    parser.add_argument("--loadgen-timeout", type=float, default=1800)
    parser.add_argument(
        "--gc-trace", action="store_true", help="log the web server's garbage collections"
    )
    args = parser.parse_args()
    quick = args.quick
    args.clients = args.clients or ([200, 1000] if quick else [1000, 2000, 5000])
    args.rates = args.rates or ([50, 200] if quick else [50, 200, 500])
    args.seconds = args.seconds or (6.0 if quick else 8.0)
    args.warmup = args.warmup or 2.0
    servers = args.server or ([PRODUCT_SERVER] if quick else list(SERVERS))
    uvicorn_required(servers)

    stop_on_sigterm()
    started = time.monotonic()
    database_url = bench_database_ready(companies=args.companies)
    workload = workload_of(database_url, args)
    cells: list[dict] = []
    errors: list[dict] = []
    with logs_directory("latency") as logs:
        for server in servers:
            cells += run_server(server, database_url, workload, args, logs, errors)

    data = {
        "servers": servers,
        "grid": {"clients": args.clients, "rates": args.rates},
        "warmup_s": args.warmup,
        "seconds_s": args.seconds,
        **workload_figures(args, cells),
        "cells": cells,
        "errors": errors,
        "notes": [],
    }
    results_write("latency", data, quick=args.quick, started=started)


if __name__ == "__main__":
    main()
