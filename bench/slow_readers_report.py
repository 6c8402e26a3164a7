"""The slow readers' section of docs/benchmarks.md, from bench/results/slow_readers*.json
(bench/slow_readers.py measures)."""

from __future__ import annotations

import json
import statistics

from bench.common import RESULTS, verdict
from bench.harness.tables import fmt_ms, latency_cells, measured_by
from bench.slow_readers import ALONE, SLOW, VARIANTS
from bench.slow_readers_web import SAMPLE_S, SETTLE_S


def _variant_summary(name: str) -> dict | None:
    """The summary of the last run of a variant, if there is one with both kinds of phase."""
    path = RESULTS / f"slow_readers_{name}.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text()).get("summary")
    return summary or None


def report_section(data: dict) -> list[str]:
    """This scenario's part of docs/benchmarks.md."""
    s = data["summary"]
    returning = not data.get("once")
    lines = [
        "## Normal clients beside slow readers",
        "",
        f"{measured_by(data, 'slow_readers')}: the stack and the writer of the WebSocket"
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
            f" {latency_cells(c)} | {fmt_ms(_published_p99(c))} | {c['deliveries_per_s']:,} |"
            f" {c['lost']} |"
            f" {c['duplicates']} | {c['gaps']} | {slow_cols} |"
            f" {c['web_rss_kb'] / 1024:.0f} / {c['rss_kb_max'] / 1024:.0f} MB |"
            f" {c['cpu_cores']['web']} / {c['cpu_cores']['machine']} | {_lag(c.get('loop_lag'))} |"
        )
    if s:
        for kind, name in ((ALONE, "(a)"), (SLOW, "(b)")):
            k = s[kind]
            lines.append(
                f"| **median {name}** | | {latency_cells(k)} |"
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
