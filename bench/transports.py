"""Commit to client over Server-Sent Events and long-polling, on the real stack.

bench/latency.py's measurement, for the two HTTP transports of PROTOCOL.md: the web server
(uvicorn, as config/serve.py runs it) and
`manage.py run_publisher` on the bench database (the harness's Stack, a fresh one per
transport), N clients in load generator processes (bench/loadgen_http.py: one HTTP
connection per client, each from a loopback address of its own), 60% of them following
one of 100 companies, 30% one of 10 industries, 10% the overview, and the harness's
Writer committing stamped single-row updates at a fixed rate. Per cell: warm-up, a
measured window, the drain (every client's cursor at its context's head) and the loss
check against the change log, all of it bench/harness/cell.py's measure.

- SSE: one `GET /api/stream/dashboard?contexts=...` stream per client.
- Long-poll: each client loops `GET /api/updates/latest/<cursor>?contexts=...&wait=25`,
  applies the answer and polls again from its `next` at once (docs/protocol.md). Also
  reported: requests answered per second and their median wait (send to answer: parked
  on the server until a change, then read), and the 429s of the per-address limit.

    python -m bench.transports            # 1,000 clients at 50 and 200 changes/s, both
    python -m bench.transports --quick    # 200 clients at 50 changes/s, both
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from bench.common import bench_database_ready, verdict
from bench.harness.cell import cell_line, hist_percentile
from bench.harness.fleet import Fleet
from bench.harness.processes import stop_on_sigterm
from bench.harness.scenario import (
    Rig,
    ints,
    logs_directory,
    results_write,
    scenario_parser,
    workload_arguments,
    workload_figures,
    workload_of,
)
from bench.harness.stack import PRODUCT_SERVER, Stack, active_connections_tidy, vacuum_churned
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

TRANSPORTS = ("sse", "longpoll")
LABELS = {"sse": "SSE", "longpoll": "long-poll"}
# DESIGN.md names a latency target for the WebSocket only; for every transport it asks
# for zero lost and zero reordered.
TARGET_LOSS = "zero lost, zero reordered"
# Hard bounds on the whole run (the expected durations are 150 s full, 45 s quick).
BUDGET_S = {"full": 300, "quick": 120}
# How long the drain may wait for every cursor to reach its head. A long-poll client
# behind gets everything in one answer, but the server answers each in turn: at 1,000
# clients that takes longer than the WebSocket's 15 s would allow.
DRAIN_TIMEOUT_S = {"sse": 15, "longpoll": 30}


class HttpFleet(Fleet):
    """The harness's Fleet running bench.loadgen_http for one transport; keeps the raw reports
    of the last window (measure returns them merged, without the HTTP figures)."""

    def __init__(self, url: str, database_url: str, workdir: Path, timeout: float, transport: str):
        super().__init__(url, database_url, workdir, timeout)
        self.transport = transport
        self.name = f"loadgen-{transport}"
        self.last_reports: list[dict] = []

    module = "bench.loadgen_http"

    def loadgen_args(self, index: int) -> list[str]:
        # Each process gets its own block of loopback addresses (the poll rate limit is
        # per client address).
        return ["--transport", self.transport, "--address-block", str(index)]

    def report(self, window: dict, timeout: float = 120) -> list[dict]:
        self.last_reports = super().report(window, timeout)
        return self.last_reports


def http_merge(reports: list[dict], window_s: float) -> dict:
    """The load generators' HTTP figures of one window as one."""
    hist: dict[int, int] = {}
    for report in reports:
        for bucket, count in report["http"]["wait_hist"].items():
            hist[int(bucket)] = hist.get(int(bucket), 0) + count
    bucket_us = reports[0]["http"]["wait_bucket_us"]
    requests = sum(hist.values())
    return {
        "requests": requests,
        "requests_per_s": round(requests / window_s) if window_s > 0 else None,
        "wait_p50_ms": hist_percentile(hist, 0.50, bucket_us),
        "wait_p99_ms": hist_percentile(hist, 0.99, bucket_us),
        "throttled": sum(r["http"]["throttled"] for r in reports),
        "failed": sum(r["http"]["failed"] for r in reports),
        "sse_reopens": sum(r["http"]["sse_reopens"] for r in reports),
    }


# -- the run --------------------------------------------------------------------------------


def run_transport(
    transport: str, database_url: str, workload: Workload, args, workdir: Path, errors: list
) -> list[dict]:
    """Every rate for one transport, on a stack of its own (its own Redis prefix, so the
    poll limiter's counts start afresh), with one fleet connected throughout."""
    cells: list[dict] = []
    stack = Stack(PRODUCT_SERVER, database_url, workdir)
    fleet = None
    writer = None
    try:
        stack.start()
        writer = Writer(database_url)
        fleet = HttpFleet(
            f"http://127.0.0.1:{stack.port}",
            database_url,
            workdir,
            timeout=args.loadgen_timeout,
            transport=transport,
        )
        ready = fleet.connect(workload.plan(args.clients))
        print(
            f"{transport}: {ready['connected']}/{args.clients} clients connected in"
            f" {ready['connect_s']} s",
            flush=True,
        )
        label = f"{transport}-{args.clients}"
        timeout = DRAIN_TIMEOUT_S[transport]
        rig = Rig(stack, fleet, writer, workload, args)
        for cell in rig.at_rates(label=label, drain_timeout=timeout):
            cell.update(
                server=stack.server,
                transport=transport,
                clients=args.clients,
                connected=ready["connected"],
                connect_s=ready["connect_s"],
                http=http_merge(fleet.last_reports, cell["window_s"]),
            )

            print(f"{transport:8} {cell_line(cell)} http={cell['http']}", flush=True)
            cells.append(cell)
    except Exception as exc:
        # Keep the cells already measured; the failure goes into the results.
        print(f"{transport}: failed: {exc!r}", flush=True)
        errors.append({"transport": transport, "error": repr(exc)})
    finally:
        if writer is not None:
            writer.close()
        # The clients first: closing an HTTP connection costs nothing, while a stopping
        # server would send every SSE client off to reconnect.
        if fleet is not None:
            fleet.stop()
        stack.stop()
    return cells


# -- the report section -------------------------------------------------------------------------


def _cell_figure(cell: dict) -> str:
    return (
        f"p50 {fmt_ms(cell['p50_ms'])} ms, p95 {fmt_ms(cell['p95_ms'])} ms, p99"
        f" {fmt_ms(cell['p99_ms'])} ms, max {fmt_ms(cell['max_ms'])} ms; {cell['lost']} lost"
    )


def _loss_row(transport: str, cells: list[dict]) -> str:
    items = sum(c["items_received"] for c in cells)
    lost = sum(c["lost"] for c in cells)
    dup = sum(c["duplicates"] for c in cells)
    gaps = sum(c["gaps"] for c in cells)
    behind = sum(c["behind_after_drain"] for c in cells)
    ok = not (lost or dup or gaps or behind)
    gap_text = "no gaps to see" if transport == "longpoll" else f"{gaps} gaps"
    return (
        f"| loss and order, {LABELS[transport]}, every cell | {TARGET_LOSS} | {lost} lost,"
        f" {dup} duplicate or out of order, {gap_text}, {behind} cursors behind after the"
        f" drain, of {items:,} items | {verdict(ok)} |"
    )


def _opening(transport: str) -> str:
    """The transport's name at the start of a sentence."""
    label = LABELS[transport]
    return label[0].upper() + label[1:]


def report_section(data: dict) -> list[str]:
    """This scenario's part of docs/benchmarks.md."""
    cells = data["cells"]
    lines = [
        "## Commit to client (Server-Sent Events and long-polling)",
        "",
        f"{measured_by(data, 'transports')}: as in the WebSocket section (uvicorn and"
        " `run_publisher` on the bench database, the 60/30/10 mix, the same stamped writer),"
        " with the HTTP transports of PROTOCOL.md, a fresh stack for each. SSE: one"
        " `/api/stream/dashboard` stream per client. Long-poll: each client loops"
        " `/api/updates/latest/<cursor>?wait=25` and polls again from `next` as soon as an"
        " answer arrives. Every client has its own loopback address (the server limits"
        " polls per address), and its own connection (httpx).",
        "",
        "| figure | target | measured | |",
        "| --- | --- | --- | --- |",
    ]
    for c in cells:
        lines.append(
            f"| commit to client, {LABELS[c['transport']]}, {c['clients']:,} clients"
            f" (60/30/10), {c['rate']} changes/s | | {_cell_figure(c)} | |"
        )
    for transport in data["transports"]:
        done = [c for c in cells if c["transport"] == transport]
        if done:
            lines.append(_loss_row(transport, done))
    lines += [
        "",
        f"Every cell: {data['warmup_s']:.0f} s warm-up, {data['seconds_s']:.0f} s measured,"
        " then the drain; the columns are those of the WebSocket table. For long-poll a"
        " delivery is an answer with changes for the client's context, *requests/s* every"
        " answer in the window (with changes or not), *wait* the time from sending a poll"
        " to having its answer (parked on the server until a change woke it, plus the"
        " read), *429* the polls the per-address limit refused (each obeyed, by waiting"
        " `Retry-After`). A poll answer has no `prev_seq`, so long-poll has no gaps to"
        " count (n/a); each answer covers (cursor, `next`] and the loss check is the same.",
        "",
        *table_head(
            "transport",
            *CELL_COLUMNS,
            "requests/s",
            "wait p50 / p99 ms",
            "429",
            "web RSS",
            CPU_HEADER,
        ),
    ]

    for c in cells:
        http = c["http"]
        poll = c["transport"] == "longpoll"
        rps = f"{http['requests_per_s']:,}" if poll else "-"
        wait = f"{fmt_ms(http['wait_p50_ms'])} / {fmt_ms(http['wait_p99_ms'])}" if poll else "-"
        lines.append(
            table_row(
                LABELS[c["transport"]],
                cell_columns(c, gaps="n/a" if poll else None),
                rps,
                wait,
                http["throttled"] if poll else "-",
                mb(c["web_rss_kb"]),
                cpu_cell(c["cpu_cores"]),
            )
        )
    lines += ["", *transport_notes(data), ""]
    return lines


def transport_notes(data: dict) -> list[str]:
    """What the HTTP transports' figures say beyond the tables: the load generators,
    latency by context kind, the web server's CPU per long poll, what went wrong."""

    cells = data["cells"]
    notes = []
    if cells:
        notes.append(loadgen_note(cells, lambda c: LABELS[c["transport"]]) + ".")
    for c in cells:
        if c.get("by_kind"):
            notes.append(
                f"- {_opening(c['transport'])}, {c['clients']:,} clients at {c['rate']}/s, by"
                f" context: {by_kind_text(c)}."
            )

    polls = [c for c in cells if c["transport"] == "longpoll" and c["http"]["requests_per_s"]]
    if polls:
        per_poll = ", ".join(
            f"{c['cpu_cores']['web'] / c['http']['requests_per_s'] * 1000:.1f} ms at {c['rate']}/s"
            for c in polls
        )
        notes.append(
            "- Long-poll: web server CPU per answered poll (CPU of the window over the polls"
            f" answered in it): {per_poll}. Every answer, with changes or not, is a request"
            " through Django, a read of the change log and a new wait."
        )
    for c in cells:
        http = c["http"]
        trouble = []
        if http["throttled"]:
            trouble.append(f"{http['throttled']} polls refused with 429")
        if http["failed"]:
            trouble.append(f"{http['failed']} requests failed")
        if http["sse_reopens"]:
            trouble.append(f"{http['sse_reopens']} streams reopened")
        if c["connected"] < c["clients"]:
            trouble.append(f"only {c['connected']:,} of {c['clients']:,} clients connected")
        if trouble:
            notes.append(f"- {_opening(c['transport'])}, {c['rate']}/s: {', '.join(trouble)}.")
    for error in data.get("errors", []):
        notes.append(f"- {_opening(error['transport'])}: the run failed ({error['error']}).")
    return notes


# -- main -------------------------------------------------------------------------------------


def budget_set(seconds: int) -> None:
    """Stop the run (through its `finally` blocks) once it has taken `seconds`."""

    def over(signum, frame):
        sys.exit(f"bench.transports: over its {seconds} s budget")

    signal.signal(signal.SIGALRM, over)
    signal.alarm(seconds)


def main() -> None:
    parser = scenario_parser(__doc__, quick="200 clients at 50/s")
    parser.add_argument("--clients", type=int, help="default 1000, quick 200")
    parser.add_argument("--rates", type=ints, help="changes/s, comma list (default 50,200)")
    parser.add_argument("--seconds", type=float, help="measured per cell (default 8, quick 6)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each cell")
    parser.add_argument(
        "--transport", action="append", choices=TRANSPORTS, help="repeatable (default both)"
    )
    workload_arguments(parser)
    parser.add_argument("--budget", type=int, help="hard limit, s (default 300, quick 120)")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    args.clients = args.clients or (200 if args.quick else 1000)
    args.rates = args.rates or ([50] if args.quick else [50, 200])
    args.seconds = args.seconds or (6.0 if args.quick else 8.0)
    args.budget = args.budget or BUDGET_S[mode]
    args.loadgen_timeout = args.budget + 30
    transports = args.transport or list(TRANSPORTS)

    stop_on_sigterm()
    budget_set(args.budget)
    started = time.monotonic()
    database_url = bench_database_ready(companies=args.companies)
    workload = workload_of(database_url, args)
    active_connections_tidy(database_url)
    vacuum_churned(database_url)
    cells: list[dict] = []
    errors: list[dict] = []
    with logs_directory("transports") as logs:
        for transport in transports:
            cells += run_transport(transport, database_url, workload, args, logs, errors)
    signal.alarm(0)
    data = {
        "transports": transports,
        "grid": {"clients": args.clients, "rates": args.rates},
        "warmup_s": args.warmup,
        "seconds_s": args.seconds,
        **workload_figures(args, cells),
        "cells": cells,
        "errors": errors,
    }
    results_write("transports", data, quick=args.quick, started=started)


if __name__ == "__main__":
    main()
