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
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import bench_database_ready, result_write, verdict
from bench.harness import (
    PRODUCT_SERVER,
    SERVERS,
    Fleet,
    Stack,
    Workload,
    Writer,
    active_connections_tidy,
    cell_line,
    fmt_ms,
    loadgens_for,
    loadgens_more,
    measure,
    record_pool,
    stop_on_sigterm,
    uvicorn_missing,
    vacuum_churned,
)

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
            processes = loadgens_for(added) if not fleet.processes else loadgens_more(added)
            ready = fleet.add(workload.plan(added), processes, ready_timeout=60 + added / 15)
            connect_s += ready["connect_s"]
            print(
                f"{server}: {clients} clients ({ready['connected']}/{added} more connected"
                f" in {ready['connect_s']} s)",
                flush=True,
            )
            for rate in args.rates:
                started = time.monotonic()
                cell = measure(
                    stack,
                    fleet,
                    writer,
                    rate=rate,
                    warmup=args.warmup,
                    seconds=args.seconds,
                    pick=workload.pick,
                    label=f"{server}-{clients}-{rate}",
                )
                cell.update(
                    server=server,
                    clients=clients,
                    connected=cell["open"],
                    connect_s=round(connect_s, 1),
                    loadgens=len(fleet.processes),
                    cell_s=round(time.monotonic() - started, 1),
                )
                print(cell_line(cell), flush=True)
                cells.append(cell)
    except Exception as exc:
        # A server that stopped answering should not cost the figures already taken.
        print(f"{server}: failed: {exc!r}", flush=True)
        errors.append({"server": server, "clients": fleet.clients, "error": repr(exc)})
    finally:
        if writer is not None:
            writer.close()
        # The server first: it closes every connection with 4503 at once, which is much
        # quicker than thousands of clients closing one by one.
        stack.stop()
        fleet.stop()
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
    m = data["machine"]
    cells = data["cells"]
    lines = [
        "## Commit to client (WebSocket)",
        "",
        f"Measured {m['date']} on {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}"
        f" (`python -m bench.latency{' --quick' if data['mode'] == 'quick' else ''}`, "
        f"{data['duration_s'] / 60:.1f} min): one web server process and `run_publisher` on the"
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
        "| server | clients | changes/s | p50 ms | p95 ms | p99 ms | max ms | to published"
        " p50 / p99 ms | deliveries/s | items/s | items delivered | lost | dup | gaps |"
        " caught up s |"
        " publisher lag max / end | web RSS | CPU web / publisher / loadgens (max one) /"
        " postgres / others / machine |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        " ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in cells:
        cpu = c["cpu_cores"]
        st = c.get("stages") or {}
        pub = c["publisher"]
        lines.append(
            f"| {c['server']} | {c['clients']:,} | {c['rate']} | {fmt_ms(c['p50_ms'])} |"
            f" {fmt_ms(c['p95_ms'])} | {fmt_ms(c['p99_ms'])} | {fmt_ms(c['max_ms'])} |"
            f" {fmt_ms(st.get('to_published_p50_ms'))} / {fmt_ms(st.get('to_published_p99_ms'))} |"
            f" {c['deliveries_per_s']:,} | {c['items_per_s']:,} | {c['items_received']:,} |"
            f" {c['lost']} | {c['duplicates']} | {c['gaps']} | {c['drain_s']} |"
            f" {_lag(pub)} | {c['web_rss_kb'] / 1024:.0f} MB |"
            f" {cpu['web']} / {cpu['publisher']} / {cpu['loadgens']} ({cpu['loadgen_max']}) /"
            f" {cpu['postgres']} / {cpu.get('others', '-')} / {cpu['machine']} |"
        )
    lines += ["", *latency_notes(data), ""]
    return lines


def latency_notes(data: dict) -> list[str]:
    """What the figures say beyond the tables, derived from them."""
    cells = data["cells"]
    notes = []
    if cells:
        busiest = max(cells, key=lambda c: c["cpu_cores"]["loadgen_max"])
        lag = max(cells, key=lambda c: c["loadgen_loop_lag_ms"]["p99"] or 0)
        notes.append(
            "- The load generators were checked against being the bottleneck: the busiest one"
            f" used {busiest['cpu_cores']['loadgen_max']} of a core"
            f" ({busiest['server']}, {busiest['clients']:,} clients, {busiest['rate']}/s), and"
            " each samples how late its event loop runs a 5 ms tick: at worst p99"
            f" {lag['loadgen_loop_lag_ms']['p99']:.0f} ms, max"
            f" {lag['loadgen_loop_lag_ms']['max']:.0f} ms ({lag['server']},"
            f" {lag['clients']:,} clients, {lag['rate']}/s). Those delays are part of the"
            " measured latency; on two cores the generators also take CPU the server could"
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
            kinds = ", ".join(
                f"{kind} p50 {fmt_ms(k['p50_ms'])} / p99 {fmt_ms(k['p99_ms'])} ms"
                for kind, k in cell["by_kind"].items()
            )
            notes.append(f"- {server}, 2,000 clients at 200/s, by context: {kinds}.")
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


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def grid_clients(server: str, args: argparse.Namespace) -> list[int]:
    """The client counts a server runs: the whole grid for the product's server; for the
    comparison, the target's 2,000 (which keeps `make bench` within its 15 minutes)."""
    if server == PRODUCT_SERVER or args.full_comparison:
        return args.clients
    return [c for c in args.clients if c == TARGET_CELL[0]] or args.clients[:1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N 200, 1,000 at 50, 200/s, uvicorn")
    parser.add_argument(
        "--full-comparison", action="store_true", help="daphne over the whole grid too"
    )
    parser.add_argument("--clients", type=_ints, help="comma list (default 1000,2000,5000)")
    parser.add_argument("--rates", type=_ints, help="changes/s, comma list (default 50,200,500)")
    parser.add_argument("--seconds", type=float, help="measured per cell (default 8, quick 6)")
    parser.add_argument("--warmup", type=float, help="seconds before each cell (default 2)")
    parser.add_argument(
        "--server",
        action="append",
        choices=SERVERS,
        help="repeatable (default uvicorn and daphne, quick uvicorn)",
    )
    parser.add_argument("--companies", type=int, default=100_000)
    parser.add_argument("--major-share", type=float, default=0.1)
    parser.add_argument("--followed-share", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=7)
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
    if "uvicorn" in servers and uvicorn_missing():
        sys.exit("uvicorn is not installed: pip install 'uvicorn[standard]>=0.30,<1'")

    stop_on_sigterm()
    started = time.monotonic()
    database_url = bench_database_ready(companies=args.companies)
    workload = Workload(
        record_pool(database_url, args.seed),
        seed=args.seed,
        major_share=args.major_share,
        followed_share=args.followed_share,
    )
    cells: list[dict] = []
    errors: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        workdir = Path(os.environ.get("BENCH_LOG_DIR") or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for server in servers:
            cells += run_server(server, database_url, workload, args, workdir, errors)
    statement = (
        round(statistics.median(c["writer"]["statement_p50_ms"] for c in cells), 2)
        if cells
        else None
    )
    data = {
        "mode": "quick" if quick else "full",
        "servers": servers,
        "grid": {"clients": args.clients, "rates": args.rates},
        "warmup_s": args.warmup,
        "seconds_s": args.seconds,
        "statement_p50_ms": statement,
        "mix": {
            "companies": 0.6,
            "industries": 0.3,
            "overview": 0.1,
            "major_share": args.major_share,
            "followed_share": args.followed_share,
        },
        "duration_s": round(time.monotonic() - started, 1),
        "cells": cells,
        "errors": errors,
        "notes": [],
    }
    path = result_write("latency", data)
    print(f"wrote {path} in {data['duration_s']:.0f} s")


if __name__ == "__main__":
    main()
