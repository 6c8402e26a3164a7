"""Normal clients beside clients that stop reading, on the real stack.

The target: "Bounded outbound buffers ... Fast clients on the same process keep their p99
within +20% of their p99 alone." Before each connection had its outbox
(realtime/outbox.py), one run of two showed normal clients' p99 rising from 29 to 50 ms
while slow readers shared the process: the hub waited on sends to clients that did not
read.

The stack of the latency scenario (bench/latency.py: the web server as the Procfile
starts it, `run_publisher`, the stamped writer at a fixed rate) and N normal clients in
its 60/30/10 mix, connected once and measured in two kinds of phase, alternating:

- (a) alone: the writer runs warm-up plus the measured window, then the drain and the
  harness's loss check (bench/loadgen.py), as one cell of the latency scenario;
- (b) the same, with M slow readers connected first (bench/loadgen.py `--slow`: a socket
  with the smallest receive buffer and a client library that stops reading once one
  frame waits), each subscribed to the busiest contexts: the overview (most of the
  bytes) and one of the ten industries the normal clients follow, in turn
  (`--slow-industries`: more of them; each adds deliveries the hub makes for the slow
  readers while they still take bytes, which is load of its own rather than slowness).
  Once REALTIME_MAX_PENDING_BYTES wait for one, the server closes it with 4413
  `slow_client`. A slow reader cut off comes back after a second or so, as the browser
  client does, and stalls again (`--once`: it stays away): at 200 changes/s one is cut
  off within seconds, and without coming back the process would hold stalled clients for
  a fraction of the window only. At the end of the phase their load generator drops
  them, and the next phase starts once the server holds only the normal clients again.

A slow reader can also be dropped without 4413: the kernel ends a connection whose
receive window stayed closed for REALTIME_UNACKED_TIMEOUT_S (TCP_USER_TIMEOUT, 15 s),
silently (no close frame, no reset, nothing in /metrics). That happens first when less
than REALTIME_MAX_PENDING_BYTES plus the kernel's send buffer reach a reader in that time
(at 100 changes/s it is a race; at 200 the 4413 comes first); the slow readers' own
account of being cut off, beside the server's counter, shows it.

Each phase runs `--rounds` times (a, b, a, b, ...); the report gives the medians and
every round, so noise shows. Once a second, in both kinds of phase alike, the web
process's /metrics (`carbon_realtime_sessions_ended_total{reason="slow_client"}`, its
connections) and its RSS are read: how many slow readers it cut off and when, counted from
the moment they had all subscribed; each slow reader also notes how long it had been
subscribed when it found itself cut off.

The web process's event loop lateness (`carbon_event_loop_lag_seconds`) is read with
them: the share of its 50 ms timer's wakeups that ran more than 5 and 10 ms late.

Variants, each written beside the main run and reported in its table, tell where the
cost lies: `--in-step` (the slow readers connect all at once, so they are cut off and
come back together), `--held` (never cut off: what stalled clients cost) and `--fresh`
(they come back without cursors: what their catch-ups cost).

    python -m bench.slow_readers            # 1,000 normal, 200 slow, 200 changes/s, 3 rounds
    python -m bench.slow_readers --quick    # 200 normal, 50 slow, 200 changes/s, 1 round
    python -m bench.slow_readers --held     # (or --in-step, --fresh) a variant
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.common import REPO, RESULTS, bench_database_ready, result_write, verdict
from bench.harness import (
    PRODUCT_SERVER,
    Fleet,
    Stack,
    Workload,
    Writer,
    active_connections_tidy,
    fmt_ms,
    loadgens_for,
    loadgens_more,
    measure,
    proc_rss_kb,
    record_pool,
    stop_on_sigterm,
    uvicorn_missing,
    vacuum_churned,
)

TARGET_RATIO = 1.2  # "within +20% of their p99 alone"
SAMPLE_S = 1.0  # how often /metrics and the RSS are read, in both kinds of phase
# The slow readers first connect over this long, each at a random moment: about one stall
# (at 200 changes/s one is cut off about 9 s after subscribing), so their stalls,
# cut-offs and returns fall at any moment, as those of independent clients do. Connected
# all at once (`--in-step`) they stall, are cut off and come back together, 200 within a
# second or two, every 9 s: a reconnection storm of its own, which the storm test covers.
STAGGER_S = 9.0
# Variants of the main run, each in bench/results/slow_readers_<name>.json beside it, to
# tell where the cost of slow readers lies: connected in step, held without ever being
# cut off (what stalled clients cost), or coming back without cursors (what their
# catch-ups cost).
VARIANTS = {
    "in_step": "the slow readers connected all at once (`--in-step`): 200 cut off and back"
    " within a second or two, every 9 s",
    "held": "the slow readers held, never cut off (`--held`: REALTIME_MAX_PENDING_BYTES 1 GiB,"
    " REALTIME_UNACKED_TIMEOUT_S 600)",
    "fresh": "the slow readers cut off come back without cursors, so owed no catch-up (`--fresh`)",
}
SETTLE_S = 20  # at most this long for the server to release the slow readers' sessions
NOTICE_S = 3.0  # for the slow readers to notice the last cut-offs before they are asked
ALONE, SLOW = "alone", "slow"


class SlowFleet(Fleet):
    """Load generators whose clients stop reading once subscribed."""

    name = "slowreaders"
    returning = True  # whether one cut off comes back
    fresh = False  # whether it comes back without cursors

    stagger_s = 0.0  # over how long they first connect

    def loadgen_args(self, index: int) -> list[str]:
        return [
            "--slow",
            *(["--slow-return"] if self.returning else []),
            *(["--slow-fresh"] if self.fresh else []),
            "--slow-stagger",
            str(self.stagger_s),
        ]

    def state_merged(self) -> dict:
        """The load generators' `state`, summed (cut_after_s: every value, sorted)."""
        answers = self.state()
        out = {key: sum(a[key] for a in answers) for key in ("open", "cut", "clients_cut")}
        out["returned"] = sum(a["returned"] for a in answers)
        out["cut_after_s"] = sorted(v for a in answers for v in a["cut_after_s"])
        return out


def web_figures(port: int) -> dict | None:
    """Slow-client cut-offs so far and live connections, from the web process's /metrics
    (None when it did not answer within 2 s)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except (OSError, ValueError):
        return None
    out = {"slow_client": 0.0, "connections": 0.0, "lag": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "carbon_event_loop_lag_seconds_bucket":
                out["lag"][sample.labels["le"]] = sample.value
            elif sample.name == "carbon_realtime_sessions_ended_total":
                if sample.labels.get("reason") == "slow_client":
                    out["slow_client"] += sample.value
            elif sample.name == "carbon_realtime_process_connections":
                out["connections"] += sample.value
    return out


class Sampler:
    """The web process's figures and RSS, every SAMPLE_S, on a thread of its own."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.samples: list[dict] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            figures = web_figures(self.stack.port)
            self.samples.append(
                {
                    "at": time.monotonic(),
                    "rss_kb": proc_rss_kb(self.stack.pid("web")),
                    **(figures or {"unanswered": True}),
                }
            )
            if self.done.wait(SAMPLE_S):
                return

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(10)


def loop_lag(samples: list[dict]) -> dict | None:
    """How late the web process's event loop ran its 50 ms timer over the samples
    (carbon_event_loop_lag_seconds): wakeups, the share later than 5 and 10 ms, and the
    bucket bound under which 99% fell."""
    answered = [s["lag"] for s in samples if s.get("lag")]
    if len(answered) < 2:
        return None
    first, last = answered[0], answered[-1]
    bounds = sorted(last, key=float)
    counts = {le: last[le] - first.get(le, 0.0) for le in bounds}
    total = counts["+Inf"]
    if not total:
        return None

    def later_than(seconds: str) -> float:
        return round(100 * (1 - counts[seconds] / total), 2)

    p99 = next(le for le in bounds if counts[le] >= 0.99 * total)
    return {
        "wakeups": int(total),
        "over_5ms_pct": later_than("0.005"),
        "over_10ms_pct": later_than("0.01"),
        "p99_under_ms": None if p99 == "+Inf" else round(float(p99) * 1000),
    }


def cutoffs(samples: list[dict], before: float, since: float) -> dict:
    """Slow-client cut-offs over the samples, and when (seconds after `since`)."""
    answered = [s for s in samples if "slow_client" in s]
    at = []  # (seconds, cut-offs so far)
    seen = before
    for sample in answered:
        if sample["slow_client"] > seen:
            seen = sample["slow_client"]
            at.append((round(sample["at"] - since, 1), int(seen - before)))
    return {
        "count": int(seen - before),
        "first_s": at[0][0] if at else None,
        "last_s": at[-1][0] if at else None,
        "steps": at,
    }


def settle(stack: Stack, connections: int, timeout: float = SETTLE_S) -> float | None:
    """Wait until the web process holds `connections`; seconds it took (None: never)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        figures = web_figures(stack.port)
        if figures is not None and figures["connections"] <= connections:
            return round(time.monotonic() - started, 1)
        time.sleep(0.2)
    return None


def slow_plan(industries: list[str], readers: int, per_reader: int) -> list[list[str]]:
    """Each slow reader's contexts: the overview and `per_reader` of the followed
    industries, taken in turn so every industry gets its share."""
    return [
        ["overview"]
        + [f"industry:{industries[(i + k) % len(industries)]}" for k in range(per_reader)]
        for i in range(readers)
    ]


def phase(
    stack: Stack,
    fleet: Fleet,
    writer: Writer,
    workload: Workload,
    args: argparse.Namespace,
    workdir: Path,
    *,
    kind: str,
    round_no: int,
) -> dict:
    """One measured phase, alone or with the slow readers."""
    label = f"{kind}-{round_no}"
    before = web_figures(stack.port) or {"slow_client": 0.0}
    slow_fleet = None
    slow: dict = {}
    if kind == SLOW:
        slow_fleet = SlowFleet(stack.ws_url, stack.database_url, workdir, args.loadgen_timeout)
        slow_fleet.returning = not args.once
        slow_fleet.fresh = args.fresh
        slow_fleet.stagger_s = 0.0 if args.in_step else STAGGER_S
        plan = slow_plan(workload.industries, args.slow, args.slow_industries)
        try:
            # They read nothing: one process holds a thousand of them easily.
            ready = slow_fleet.add(plan, loadgens_more(args.slow), 60 + args.slow / 15)
        except Exception:
            slow_fleet.stop()
            raise
        slow = {"clients": args.slow, "contexts": len(plan[0]), **ready}
    subscribed_at = time.monotonic()
    try:
        with Sampler(stack) as sampler:
            cell = measure(
                stack,
                fleet,
                writer,
                rate=args.rate,
                warmup=args.warmup,
                seconds=args.seconds,
                pick=workload.pick,
                label=label,
            )
        if slow_fleet is not None:
            # Time for cut-offs of the window's last second to reach the readers (each
            # checks once a second, and may need a ping to draw the reset).
            time.sleep(NOTICE_S)
            slow.update(slow_fleet.state_merged())
    finally:
        if slow_fleet is not None:
            slow_fleet.stop()
    samples = sampler.samples
    rss = [s["rss_kb"] for s in samples if s["rss_kb"]]
    if slow:
        after = slow.pop("cut_after_s")
        slow["cut_after_p50_s"] = statistics.median(after) if after else None
        slow["cut_after_max_s"] = max(after, default=None)
        answered = [s for s in samples if "connections" in s]
        # Slow readers the server still held at the end (beyond the normal clients).
        slow["held_end"] = int(answered[-1]["connections"] - cell["open"]) if answered else None
    cell.update(
        kind=kind,
        round=round_no,
        cutoffs=cutoffs(samples, before["slow_client"], subscribed_at),
        rss_kb_max=max(rss, default=cell["web_rss_kb"]),
        loop_lag=loop_lag(samples),
        metrics_unanswered=sum(1 for s in samples if s.get("unanswered")),
        # (seconds from the slow readers' subscription, cut-offs, connections, RSS MB)
        samples=[
            [
                round(s["at"] - subscribed_at, 1),
                s.get("slow_client"),
                s.get("connections"),
                s["rss_kb"] // 1024,
            ]
            for s in samples
        ],
        slow=slow,
    )
    if slow_fleet is not None:
        cell["settle_s"] = settle(stack, fleet.clients)
    return cell


def phase_line(cell: dict) -> str:
    cut = cell["cutoffs"]
    text = (
        f"{cell['kind']:5} round {cell['round']}: p50={fmt_ms(cell['p50_ms'])}"
        f" p95={fmt_ms(cell['p95_ms'])} p99={fmt_ms(cell['p99_ms'])}"
        f" max={fmt_ms(cell['max_ms'])} ms"
        f" lost={cell['lost']} dup={cell['duplicates']} gaps={cell['gaps']}"
        f" open={cell['open']}/{cell['clients']} deliveries/s={cell['deliveries_per_s']}"
        f" rss={cell['web_rss_kb'] // 1024} MB (max {cell['rss_kb_max'] // 1024})"
        f" cpu web={cell['cpu_cores']['web']} machine={cell['cpu_cores']['machine']}"
    )
    if cell.get("web_gc"):
        text += f" gc={cell['web_gc']}"
    if cell.get("loop_lag"):
        text += f" lag={cell['loop_lag']}"
    slow = cell["slow"]
    if slow:
        text += (
            f" | slow readers {slow['connected']}/{slow['clients']}: server cut off"
            f" {cut['count']} (first {cut['first_s']} s, last {cut['last_s']} s); readers saw"
            f" {slow['cut']} cut-offs ({slow['clients_cut']} readers, after p50"
            f" {slow['cut_after_p50_s']} s, max {slow['cut_after_max_s']} s), came back"
            f" {slow['returned']}, held at the end {slow['held_end']}; settled in"
            f" {cell.get('settle_s')} s"
        )
    return text


def run(database_url: str, workload: Workload, args, workdir: Path, errors: list) -> list[dict]:
    """Connect the normal clients once, then alternate the phases."""
    phases: list[dict] = []
    active_connections_tidy(database_url)
    vacuum_churned(database_url)
    stack = Stack(PRODUCT_SERVER, database_url, workdir, env=args.web_env, gc_trace=args.gc_trace)
    fleet = Fleet(stack.ws_url, database_url, workdir, timeout=args.loadgen_timeout)
    writer = None
    try:
        stack.start()
        writer = Writer(database_url)
        ready = fleet.add(
            workload.plan(args.clients), loadgens_for(args.clients), 60 + args.clients / 15
        )
        print(f"{ready['connected']}/{args.clients} normal clients in {ready['connect_s']} s")
        for round_no in range(1, args.rounds + 1):
            for kind in (ALONE, SLOW):
                started = time.monotonic()
                cell = phase(
                    stack, fleet, writer, workload, args, workdir, kind=kind, round_no=round_no
                )
                cell["phase_s"] = round(time.monotonic() - started, 1)
                print(phase_line(cell), flush=True)
                phases.append(cell)
    except Exception as exc:
        print(f"failed: {exc!r}", flush=True)
        errors.append({"phases_done": len(phases), "error": repr(exc)})
    finally:
        if writer is not None:
            writer.close()
        stack.stop()
        fleet.stop()
    return phases


def summary(phases: list[dict]) -> dict:
    """Medians of each kind of phase, the ratio of the p99s, loss and cut-offs."""
    out: dict = {}
    for kind in (ALONE, SLOW):
        cells = [c for c in phases if c["kind"] == kind and c["p99_ms"] is not None]
        if not cells:
            return {}
        out[kind] = {
            key: round(statistics.median(c[key] for c in cells), 1)
            for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms")
        }
        out[kind]["rss_mb"] = round(statistics.median(c["web_rss_kb"] for c in cells) / 1024)
        out[kind]["rss_max_mb"] = round(max(c["rss_kb_max"] for c in cells) / 1024)
        out[kind]["web_cpu"] = round(statistics.median(c["cpu_cores"]["web"] for c in cells), 2)
        out[kind]["rounds"] = len(cells)
    out["p99_ratio"] = round(out[SLOW]["p99_ms"] / out[ALONE]["p99_ms"], 2)
    rounds = {c["round"]: {} for c in phases}
    for c in phases:
        rounds[c["round"]][c["kind"]] = c["p99_ms"]
    out["p99_ratio_by_round"] = [
        round(r[SLOW] / r[ALONE], 2) for r in rounds.values() if r.get(SLOW) and r.get(ALONE)
    ]
    out["lost"] = sum(c["lost"] for c in phases)
    out["duplicates"] = sum(c["duplicates"] for c in phases)
    out["gaps"] = sum(c["gaps"] for c in phases)
    out["closed_by_server"] = max(c["closed_by_server"] for c in phases)
    slow = [c for c in phases if c["kind"] == SLOW]
    out["slow_readers"] = sum(c["slow"]["connected"] for c in slow)
    out["readers_cut"] = sum(c["slow"]["clients_cut"] for c in slow)
    out["cut_off"] = sum(c["cutoffs"]["count"] for c in slow)
    out["found_cut"] = sum(c["slow"]["cut"] for c in slow)
    # Found cut off, but not by 4413: the kernel's TCP_USER_TIMEOUT (REALTIME_UNACKED_TIMEOUT_S)
    # also ends a connection whose window stayed closed that long (a few may be cut-offs
    # the readers had not noticed yet when the phase ended, or the other way round).
    out["without_4413"] = sum(max(0, c["slow"]["cut"] - c["cutoffs"]["count"]) for c in slow)
    firsts = [c["cutoffs"]["first_s"] for c in slow if c["cutoffs"]["first_s"] is not None]
    out["cut_first_s"] = statistics.median(firsts) if firsts else None
    afters = [c["slow"]["cut_after_p50_s"] for c in slow if c["slow"]["cut_after_p50_s"]]
    out["cut_after_p50_s"] = statistics.median(afters) if afters else None
    out["ok"] = (
        out["p99_ratio"] <= TARGET_RATIO
        and out["lost"] == 0
        and out["duplicates"] == 0
        and out["closed_by_server"] == 0
    )
    return out


# -- the report section -------------------------------------------------------------------------


def _variant_summary(name: str) -> dict | None:
    """The summary of the last run of a variant, if there is one with both kinds of phase."""
    path = RESULTS / f"slow_readers_{name}.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text()).get("summary")
    return summary or None


def report_section(data: dict) -> list[str]:
    """This scenario's part of docs/benchmarks.md."""
    m = data["machine"]
    s = data["summary"]
    quick = data["mode"] == "quick"
    returning = not data.get("once")
    lines = [
        "## Normal clients beside slow readers",
        "",
        f"Measured {m['date']} on {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}"
        f" (`python -m bench.slow_readers{' --quick' if quick else ''}`,"
        f" {data['duration_s'] / 60:.1f} min): the stack and the writer of the WebSocket"
        f" section, {data['clients']:,} normal clients in its 60/30/10 mix at"
        f" {data['rate']} changes/s, measured alone (a) and with {data['slow']:,} slow readers"
        f" on the same process (b), alternating, {data['rounds']} of each. A slow reader"
        " subscribes to the overview and"
        + (
            " one of the ten industries the normal clients follow (in turn), then"
            if data.get("slow_industries", 1) == 1
            else f" {data['slow_industries']} of the ten industries the normal clients follow, then"
        )
        + " reads nothing: its socket's receive buffer is the kernel's smallest and its client"
        " library stops reading once one frame waits. The server cuts one off (close 4413"
        " `slow_client`) once REALTIME_MAX_PENDING_BYTES"
        f" ({data['settings']['max_pending_bytes']:,} bytes) wait for it beyond what its"
        " socket holds (REALTIME_SOCKET_SEND_BUFFER_BYTES"
        f" {data['settings']['socket_send_buffer_bytes']:,}, doubled by the kernel, of which"
        " at most REALTIME_SOCKET_NOTSENT_BYTES"
        f" {data['settings'].get('socket_notsent_bytes', 0):,} not sent yet; 0: no bound)."
        + (
            f" The slow readers first connect over {data['stagger_s']:g} s, each at a random"
            " moment, so their stalls, cut-offs and returns fall at any moment, as those of"
            " independent clients do."
            if data.get("stagger_s")
            else " The slow readers connect all at once (`--in-step`): they stall, are cut off"
            " and come back together."
        )
        + (
            " A slow reader cut off comes back after 0.5 to 1.5 s and resumes from its cursors,"
            " as the browser client does: its catch-up (from the hub's recent frames, or the"
            " log once they no longer reach back) goes out at the pace it reads, which is"
            " none, so it stalls again with the live frames of its contexts waiting behind"
            " the catch-up, and the process holds stalled clients throughout the window."
            if returning
            else " A slow reader cut off stays away (`--once`)."
        ),
        "",
        "| figure | target | measured | |",
        "| --- | --- | --- | --- |",
    ]
    if not s:
        lines += [
            "| normal clients' p99 with slow readers on the same process | within +20% of"
            " their p99 alone | no complete pair of phases in this run | **misses** |",
            "",
        ]
    else:
        by_round = ", ".join(f"{r:.2f}x" for r in s["p99_ratio_by_round"])
        lines += [
            f"| normal clients' p99 with {data['slow']:,} slow readers on the same process"
            f" ({data['clients']:,} clients, {data['rate']} changes/s) | within +20% of their"
            f" p99 alone | {fmt_ms(s[SLOW]['p99_ms'])} ms against {fmt_ms(s[ALONE]['p99_ms'])} ms"
            f" alone: {s['p99_ratio']:.2f}x (medians of {s[ALONE]['rounds']}; by round"
            f" {by_round}); {s['lost']} lost, {s['duplicates']} duplicated,"
            f" {s['closed_by_server']} normal clients closed by the server |"
            f" {verdict(s['ok'])} |",
            "| slow readers cut off (4413 `slow_client`), outbound buffers bounded | every"
            " one, once REALTIME_MAX_PENDING_BYTES wait for it |"
            f" {s['readers_cut']:,} of {s['slow_readers']:,} slow readers cut off, each"
            f" {_s(s['cut_after_p50_s'])} after subscribing (median);"
            f" {s['cut_off']:,} closes with 4413 counted by the server"
            + (
                f" (the first {_s(s['cut_first_s'])} after the slow readers had subscribed)"
                if s["cut_first_s"] is not None
                else ""
            )
            + (f", about {s['without_4413']:,} drops without it" if s["without_4413"] else "")
            + f"; web RSS {s[SLOW]['rss_max_mb']} MB at most, {s[ALONE]['rss_max_mb']} MB"
            f" alone | {verdict(s['readers_cut'] == s['slow_readers'])} |",
        ]
        for name, label in VARIANTS.items():
            variant = _variant_summary(name)
            if variant is None:
                continue
            by_round = ", ".join(f"{r:.2f}x" for r in variant["p99_ratio_by_round"])
            lines.append(
                f"| the same, {label} | (to tell where the cost lies) |"
                f" {fmt_ms(variant[SLOW]['p99_ms'])} ms against"
                f" {fmt_ms(variant[ALONE]['p99_ms'])} ms"
                f" alone: {variant['p99_ratio']:.2f}x (medians of {variant[ALONE]['rounds']};"
                f" by round {by_round}); {variant['lost']} lost, {variant['cut_off']:,} closes"
                " with 4413 | |"
            )
        lines.append("")
    lines += [
        f"Every phase: {data['warmup_s']:.0f} s warm-up, {data['seconds_s']:.0f} s measured,"
        " then the drain and the loss check of the normal clients (the columns of the"
        " WebSocket section). *4413* counts the web process's"
        ' `carbon_realtime_sessions_ended_total{reason="slow_client"}` over the phase, read'
        f" every {SAMPLE_S:.0f} s (*first* is when it first rose, counted from the moment"
        " every slow reader had subscribed); *found cut off* is what the slow readers saw"
        " (each checks once a second), and *after* how long one had been subscribed by then,"
        " median / max; *held at end* the slow readers the server still held when the phase"
        " ended. Web RSS at the end of the phase / the most seen during it. *Loop late*: the"
        " share of the web process's event-loop wakeups, due every 50 ms, that ran more than"
        " 5 and 10 ms late (`carbon_event_loop_lag_seconds`): how long a frame ready then"
        " waited for the process before its delivery could start. *Published p99*: of the"
        " same changes, the 99th percentile of their commit to the publisher's processed_at"
        " (the publisher is a process of its own; the web process gets a change after that).",
        "",
        "| phase | round | p50 ms | p95 ms | p99 ms | max ms | published p99 ms | deliveries/s |"
        " lost | dup | gaps | slow readers | 4413 | first 4413 | found cut off | after |"
        " came back | held at end | web RSS end / max | CPU web / machine |"
        " loop late > 5 / 10 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        " ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for c in data["phases"]:
        slow = c["slow"]
        slow_cols = (
            f"{slow['connected']} | {c['cutoffs']['count']} | {_s(c['cutoffs']['first_s'])} |"
            f" {slow['cut']} | {_s(slow['cut_after_p50_s'])} / {_s(slow['cut_after_max_s'])} |"
            f" {slow['returned']} | {'-' if slow['held_end'] is None else slow['held_end']}"
            if slow
            else "- | - | - | - | - | - | -"
        )
        lines.append(
            f"| {'(b) with slow readers' if c['kind'] == SLOW else '(a) alone'} | {c['round']} |"
            f" {fmt_ms(c['p50_ms'])} | {fmt_ms(c['p95_ms'])} | {fmt_ms(c['p99_ms'])} |"
            f" {fmt_ms(c['max_ms'])} | {fmt_ms(_published_p99(c))} | {c['deliveries_per_s']:,} |"
            f" {c['lost']} |"
            f" {c['duplicates']} | {c['gaps']} | {slow_cols} |"
            f" {c['web_rss_kb'] / 1024:.0f} / {c['rss_kb_max'] / 1024:.0f} MB |"
            f" {c['cpu_cores']['web']} / {c['cpu_cores']['machine']} | {_lag(c.get('loop_lag'))} |"
        )
    if s:
        for kind, name in ((ALONE, "(a)"), (SLOW, "(b)")):
            k = s[kind]
            lines.append(
                f"| **median {name}** | | {fmt_ms(k['p50_ms'])} | {fmt_ms(k['p95_ms'])} |"
                f" {fmt_ms(k['p99_ms'])} | {fmt_ms(k['max_ms'])} |"
                f" {fmt_ms(_published_p99_median(data['phases'], kind))} | | | | | | | | | | | |"
                f" {k['rss_mb']} / {k['rss_max_mb']} MB | {k['web_cpu']} | |"
            )
    lines += ["", *notes(data), ""]
    return lines


def _published_p99(phase: dict) -> float | None:
    return (phase.get("stages") or {}).get("to_published_p99_ms")


def _published_p99_median(phases: list[dict], kind: str) -> float | None:
    values = [_published_p99(c) for c in phases if c["kind"] == kind]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _lag(lag: dict | None) -> str:
    """The share of the event loop's 50 ms wakeups later than 5 and 10 ms."""
    if not lag:
        return "-"
    return f"{lag['over_5ms_pct']:.1f}% / {lag['over_10ms_pct']:.1f}%"


def _s(value) -> str:
    return "-" if value is None else f"{value:.0f} s"


def notes(data: dict) -> list[str]:
    out = []
    others = max((c["cpu_cores"].get("others", 0) for c in data["phases"]), default=0)
    if others >= 0.2:
        out.append(
            f"- Other work ran on the machine meanwhile: up to {others} cores outside the"
            " stack and the load generators in one phase, which the server could not use."
        )
    s = data["summary"]
    if s and s["without_4413"]:
        out.append(
            f"- About {s['without_4413']:,} times a slow reader was dropped without 4413: the"
            " kernel ends a connection whose receive window stayed closed for"
            " REALTIME_UNACKED_TIMEOUT_S (TCP_USER_TIMEOUT) when less than"
            " REALTIME_MAX_PENDING_BYTES plus the kernel's send buffer reached it by then. The"
            " server's buffers stay bounded, but that client gets no close frame and no reset"
            " (it learns when it next sends) and /metrics counts no `slow_client`."
        )
    held = _variant_summary("held")
    if s and held and not data.get("variant"):
        cycles = s["cut_off"] / max(1, s["slow_readers"] / data["slow"]) / data["seconds_s"]
        out.append(
            f"- Where the cost lies: held without ever being cut off, the same slow readers"
            f" leave the normal clients' p99 at {held['p99_ratio']:.2f}x; cut off and coming"
            f" back (about {cycles:.0f} a second) at {s['p99_ratio']:.2f}x. What costs is the"
            " cycle (a new connection's set-up, its catch-up, and live frames sent to it"
            " until it stalls again), not stalled clients. The event loop's lateness"
            " column shows it: the process's loop runs late more often with them."
        )
    published = {kind: _published_p99_median(data["phases"], kind) for kind in (ALONE, SLOW)}
    if s and None not in published.values():
        rise = s[SLOW]["p99_ms"] - s[ALONE]["p99_ms"]
        before_web = published[SLOW] - published[ALONE]
        out.append(
            f"- Before the web process: the publisher's p99 (commit to published) went from"
            f" {fmt_ms(published[ALONE])} to {fmt_ms(published[SLOW])} ms with the slow readers,"
            f" {fmt_ms(before_web)} of the {fmt_ms(rise)} ms the normal clients' p99 rose (medians"
            " of the phases). The publisher is a process of its own that does nothing for"
            " the slow readers: what delays it is the machine's CPU, which every process of"
            " the stack and the load generators share (CPU column)."
        )
    unanswered = sum(c["metrics_unanswered"] for c in data["phases"])
    if unanswered:
        out.append(f"- /metrics did not answer within 2 s {unanswered} times.")
    unsettled = [c["round"] for c in data["phases"] if c["kind"] == SLOW and c["settle_s"] is None]
    if unsettled:
        out.append(
            f"- Round {', '.join(map(str, unsettled))}: the server still held slow readers"
            f" {SETTLE_S} s after their load generator dropped them."
        )
    for error in data.get("errors", []):
        out.append(f"- The run failed after {error['phases_done']} phases ({error['error']}).")
    return out


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 normal, 50 slow, 1 round")
    parser.add_argument("--clients", type=int, help="normal clients (default 1,000)")
    parser.add_argument("--slow", type=int, help="slow readers (default 200)")
    parser.add_argument("--rate", type=int, help="changes/s (default 200)")
    parser.add_argument("--rounds", type=int, help="phases of each kind (default 3, quick 1)")
    parser.add_argument("--seconds", type=float, help="measured per phase (default 30, quick 15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each window")
    parser.add_argument(
        "--pending-bytes", type=int, help="REALTIME_MAX_PENDING_BYTES for the web server"
    )
    parser.add_argument("--once", action="store_true", help="slow readers cut off stay away")
    parser.add_argument(
        "--held",
        action="store_true",
        help="slow readers are never cut off (REALTIME_MAX_PENDING_BYTES 1 GiB)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="slow readers cut off come back without cursors"
    )
    parser.add_argument(
        "--in-step",
        action="store_true",
        help=f"slow readers connect all at once (default: over {STAGGER_S:g} s)",
    )
    parser.add_argument(
        "--gc-trace", action="store_true", help="log the web process's garbage collections"
    )
    parser.add_argument(
        "--slow-industries",
        type=int,
        default=1,
        help="followed industries each slow reader adds to the overview (default 1, at most 10)",
    )
    parser.add_argument("--companies", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--loadgen-timeout", type=float, default=1800)
    args = parser.parse_args()
    quick = args.quick
    args.clients = args.clients or (200 if quick else 1000)
    args.slow = args.slow or (50 if quick else 200)
    args.rate = args.rate or 200
    args.rounds = args.rounds or (1 if quick else 3)
    args.seconds = args.seconds or (15.0 if quick else 30.0)
    args.web_env = {}
    if args.pending_bytes:
        args.web_env["REALTIME_MAX_PENDING_BYTES"] = str(args.pending_bytes)
    variants = [name for name in ("in_step", "held", "fresh") if getattr(args, name)]
    if len(variants) > 1 or (variants and (args.once or args.pending_bytes)):
        sys.exit("--in-step, --held and --fresh go alone (not with --once or --pending-bytes)")
    if args.held:
        # Neither the server nor the kernel ends them: what held, stalled clients cost.
        args.web_env["REALTIME_MAX_PENDING_BYTES"] = str(1 << 30)
        args.web_env["REALTIME_UNACKED_TIMEOUT_S"] = "600"
    if uvicorn_missing():
        sys.exit("uvicorn is not installed: pip install 'uvicorn[standard]>=0.30,<1'")

    stop_on_sigterm()
    started = time.monotonic()
    database_url = bench_database_ready(companies=args.companies)
    workload = Workload(
        record_pool(database_url, args.seed), seed=args.seed, major_share=0.1, followed_share=0.5
    )
    errors: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp:
        workdir = Path(os.environ.get("BENCH_LOG_DIR") or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        phases = run(database_url, workload, args, workdir, errors)
    data = {
        "mode": "quick" if quick else "full",
        "clients": args.clients,
        "slow": args.slow,
        "rate": args.rate,
        "rounds": args.rounds,
        "once": args.once,
        "variant": variants[0] if variants else None,
        "stagger_s": 0.0 if args.in_step else STAGGER_S,
        "slow_industries": args.slow_industries,
        "warmup_s": args.warmup,
        "seconds_s": args.seconds,
        "settings": web_settings(database_url, args.web_env),
        "duration_s": round(time.monotonic() - started, 1),
        "summary": summary(phases),
        "phases": phases,
        "errors": errors,
    }
    name = f"slow_readers_{variants[0]}" if variants else "slow_readers"
    path = result_write(name, data)
    s = data["summary"]
    if s:
        print(
            f"p99 alone {s[ALONE]['p99_ms']} ms, with slow readers {s[SLOW]['p99_ms']} ms:"
            f" {s['p99_ratio']}x (target {TARGET_RATIO}x); lost {s['lost']}; slow readers"
            f" cut off {s['readers_cut']} of {s['slow_readers']}, {s['cut_off']} closes with"
            f" 4413, about {s['without_4413']} drops without"
        )
    print(f"wrote {path} in {data['duration_s']:.0f} s")


def web_settings(database_url: str, env: dict[str, str]) -> dict:
    """The limits the web server ran with: config/settings.py read with its environment."""
    code = (
        "import config.settings as s;"
        "print(s.REALTIME_MAX_PENDING_BYTES, s.REALTIME_SOCKET_SEND_BUFFER_BYTES,"
        " s.REALTIME_SOCKET_NOTSENT_BYTES)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": database_url, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {
        "max_pending_bytes": int(out[0]),
        "socket_send_buffer_bytes": int(out[1]),
        "socket_notsent_bytes": int(out[2]),
    }


if __name__ == "__main__":
    main()
