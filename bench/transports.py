"""Commit to client over Server-Sent Events and long-polling, on the real stack.

bench/latency.py's measurement, for the two HTTP transports of PROTOCOL.md: the web server
(uvicorn, as config/serve.py runs it) and
`manage.py run_publisher` on the bench database (latency.Stack, a fresh one per
transport), N clients in load generator processes (bench/loadgen_http.py: one HTTP
connection per client, each from a loopback address of its own), 60% of them following
one of 100 companies, 30% one of 10 industries, 10% the overview, and latency.py's
writer committing stamped single-row updates at a fixed rate. Per cell: warm-up, a
measured window, the drain (every client's cursor at its context's head) and the loss
check against the change log, all of it latency.measure.

- SSE: one `GET /api/stream/dashboard?contexts=...` stream per client.
- Long-poll: each client loops `GET /api/updates/latest/<cursor>?contexts=...&wait=25`,
  applies the answer and polls again from its `next` at once (docs/protocol.md). Also
  reported: requests answered per second and their median wait (send to answer: parked
  on the server until a change, then read), and the 429s of the per-address limit.

    python -m bench.transports            # 1,000 clients at 50 and 200 changes/s, both
    python -m bench.transports --quick    # 200 clients at 50 changes/s, both
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import bench_database_ready, result_write, verdict
from bench.harness import (
    PRODUCT_SERVER,
    Fleet,
    Stack,
    Workload,
    Writer,
    active_connections_tidy,
    cell_line,
    hist_percentile,
    loadgens_for,
    measure,
    record_pool,
    stop_on_sigterm,
    vacuum_churned,
)

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
    """latency.Fleet running bench.loadgen_http for one transport; keeps the raw reports
    of the last window (latency.measure returns them merged, without the HTTP figures)."""

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
        ready = fleet.add(
            workload.plan(args.clients),
            loadgens_for(args.clients),
            ready_timeout=60 + args.clients / 15,
        )
        print(
            f"{transport}: {ready['connected']}/{args.clients} clients connected in"
            f" {ready['connect_s']} s",
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
                label=f"{transport}-{args.clients}-{rate}",
                drain_timeout=DRAIN_TIMEOUT_S[transport],
            )
            cell.update(
                server=stack.server,
                transport=transport,
                clients=args.clients,
                connected=ready["connected"],
                connect_s=ready["connect_s"],
                loadgens=len(fleet.processes),
                http=http_merge(fleet.last_reports, cell["window_s"]),
                cell_s=round(time.monotonic() - started, 1),
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


def fmt_ms(value) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


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
    m = data["machine"]
    cells = data["cells"]
    lines = [
        "## Commit to client (Server-Sent Events and long-polling)",
        "",
        f"Measured {m['date']} on {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}"
        f" (`python -m bench.transports{' --quick' if data['mode'] == 'quick' else ''}`, "
        f"{data['duration_s'] / 60:.1f} min): as in the WebSocket section (uvicorn and"
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
        "| transport | clients | changes/s | p50 ms | p95 ms | p99 ms | max ms | to published"
        " p50 / p99 ms | deliveries/s | items/s | items delivered | lost | dup | gaps |"
        " caught up s | requests/s | wait p50 / p99 ms | 429 | web RSS |"
        " CPU web / publisher / loadgens (max one) / postgres / others / machine |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        " ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in cells:
        cpu = c["cpu_cores"]
        st = c.get("stages") or {}
        http = c["http"]
        poll = c["transport"] == "longpoll"
        rps = f"{http['requests_per_s']:,}" if poll else "-"
        wait = f"{fmt_ms(http['wait_p50_ms'])} / {fmt_ms(http['wait_p99_ms'])}" if poll else "-"
        lines.append(
            f"| {LABELS[c['transport']]} | {c['clients']:,} | {c['rate']} | {fmt_ms(c['p50_ms'])} |"
            f" {fmt_ms(c['p95_ms'])} | {fmt_ms(c['p99_ms'])} | {fmt_ms(c['max_ms'])} |"
            f" {fmt_ms(st.get('to_published_p50_ms'))} / {fmt_ms(st.get('to_published_p99_ms'))} |"
            f" {c['deliveries_per_s']:,} | {c['items_per_s']:,} | {c['items_received']:,} |"
            f" {c['lost']} | {c['duplicates']} | {'n/a' if poll else c['gaps']} |"
            f" {c['drain_s']} |"
            f" {rps} | {wait} |"
            f" {http['throttled'] if poll else '-'} | {c['web_rss_kb'] / 1024:.0f} MB |"
            f" {cpu['web']} / {cpu['publisher']} / {cpu['loadgens']} ({cpu['loadgen_max']}) /"
            f" {cpu['postgres']} / {cpu.get('others', '-')} / {cpu['machine']} |"
        )
    lines += ["", *transport_notes(data), ""]
    return lines


def transport_notes(data: dict) -> list[str]:
    """What the figures say beyond the tables, derived from them."""
    cells = data["cells"]
    notes = []
    if cells:
        busiest = max(cells, key=lambda c: c["cpu_cores"]["loadgen_max"])
        lag = max(cells, key=lambda c: c["loadgen_loop_lag_ms"]["p99"] or 0)
        notes.append(
            "- The load generators were checked against being the bottleneck: the busiest one"
            f" used {busiest['cpu_cores']['loadgen_max']} of a core"
            f" ({LABELS[busiest['transport']]}, {busiest['clients']:,} clients,"
            f" {busiest['rate']}/s); their event loops ran a 5 ms tick at worst p99"
            f" {lag['loadgen_loop_lag_ms']['p99']:.0f} ms, max"
            f" {lag['loadgen_loop_lag_ms']['max']:.0f} ms late ({LABELS[lag['transport']]},"
            f" {lag['rate']}/s), which is part of the measured latency."
        )
    for c in cells:
        kinds = ", ".join(
            f"{kind} p50 {fmt_ms(k['p50_ms'])} / p99 {fmt_ms(k['p99_ms'])} ms"
            for kind, k in c.get("by_kind", {}).items()
        )
        if kinds:
            notes.append(
                f"- {_opening(c['transport'])}, {c['clients']:,} clients at {c['rate']}/s, by"
                f" context: {kinds}."
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


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def budget_set(seconds: int) -> None:
    """Stop the run (through its `finally` blocks) once it has taken `seconds`."""

    def over(signum, frame):
        sys.exit(f"bench.transports: over its {seconds} s budget")

    signal.signal(signal.SIGALRM, over)
    signal.alarm(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 clients at 50/s")
    parser.add_argument("--clients", type=int, help="default 1000, quick 200")
    parser.add_argument("--rates", type=_ints, help="changes/s, comma list (default 50,200)")
    parser.add_argument("--seconds", type=float, help="measured per cell (default 8, quick 6)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each cell")
    parser.add_argument(
        "--transport", action="append", choices=TRANSPORTS, help="repeatable (default both)"
    )
    parser.add_argument("--companies", type=int, default=100_000)
    parser.add_argument("--major-share", type=float, default=0.1)
    parser.add_argument("--followed-share", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=7)
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
    workload = Workload(
        record_pool(database_url, args.seed),
        seed=args.seed,
        major_share=args.major_share,
        followed_share=args.followed_share,
    )
    active_connections_tidy(database_url)
    vacuum_churned(database_url)
    cells: list[dict] = []
    errors: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-transports-") as tmp:
        workdir = Path(os.environ.get("BENCH_LOG_DIR") or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for transport in transports:
            cells += run_transport(transport, database_url, workload, args, workdir, errors)
    signal.alarm(0)
    data = {
        "mode": mode,
        "transports": transports,
        "grid": {"clients": args.clients, "rates": args.rates},
        "warmup_s": args.warmup,
        "seconds_s": args.seconds,
        "statement_p50_ms": round(
            statistics.median(c["writer"]["statement_p50_ms"] for c in cells), 2
        )
        if cells
        else None,
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
    }
    path = result_write("transports", data)
    print(f"wrote {path} in {data['duration_s']:.0f} s")


if __name__ == "__main__":
    main()
