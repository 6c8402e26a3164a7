"""The bandwidth section of docs/benchmarks.md, from bench/results/bandwidth.json
(bench/bandwidth.py measures)."""

from __future__ import annotations

from bench.bandwidth import TARGET_PERCENT
from bench.common import verdict
from bench.harness.tables import fmt_ms, measured_on


def _kb(value: int) -> str:
    return f"{value / 1000:,.1f} kB"


def report_section(data: dict) -> list[str]:
    """This scenario's part of docs/benchmarks.md."""
    diff, naive = data["differential"], data["naive"]
    dr, nr = diff["received"], naive["received"]
    counts = diff["counts"]
    frame = diff["one_item_frame_bytes"]
    percent = 100 * frame / naive["reload_bytes"] if frame and naive["reload_bytes"] else None
    factor = data["factor"]
    minutes = data["real_s"] / 60
    lines = [
        "## Bandwidth: differential updates against reloading",
        "",
        f"{measured_on(data)}"
        f" (`python -m bench.bandwidth{' --quick' if data['mode'] == 'quick' else ''}`,"
        f" {data['duration_s']:.0f} s): the web server (uvicorn) and `run_publisher` on the"
        " 100,000-company"
        f" bench database. A {data['view_size']}-company view (`GET {data['endpoint']}`, one"
        f" directory page, every field) kept current for {minutes:.0f} minutes by two"
        " clients: *differential* loads it once and follows the companies' 50"
        " `company:<uuid>` contexts over one WebSocket (an application ping every"
        f" {data['ping_s']:.0f} s); *naive* reloads it every {data['reload_s']:.0f} s (no"
        " ETag, keep-alive). Changes: "
        f"{data['corrections_per_company_hour']:g} corrections per company per hour on the"
        f" view ({data['view_changes']} in {minutes:.0f} min) and the simulator's"
        f" {data['background_rate']:g} changes/s elsewhere ({data['background_changes']:,}),"
        f" committed as raw SQL. Time was compressed {factor:g}x ({data['window_s']:.0f} s):"
        " change rate, reload interval, server heartbeat and client pings all scaled"
        f" together, so the counts (and the bytes) are those of {minutes:.0f} real minutes."
        " Bytes are TCP payload counted by the kernel on the client sockets (`TCP_INFO`):"
        " HTTP headers and WebSocket framing included, IP/TCP headers and TLS not.",
        "",
        "| figure | target | measured | |",
        "| --- | --- | --- | --- |",
        "| differential payload for one changed metric on a 50-company view | under 5% of a"
        f" full reload | {_pct(percent)}: one batch frame with one item, {frame} B, against one"
        f" reload, {naive['reload_bytes']:,} B (headers and body) |"
        f" {verdict(percent is not None and percent < TARGET_PERCENT)} |",
        f"| bytes received to keep the view current for {minutes:.0f} min | | differential"
        f" {_kb(dr['total'])}, naive {_kb(nr['total'])}: **{data['ratio_received']}x** less"
        f" ({data['ratio_both_ways']}x counting what the clients sent too) | |",
        "| latency, differential: commit to client | | p50"
        f" {fmt_ms(diff['latency']['p50_ms'])} ms, p99 {fmt_ms(diff['latency']['p99_ms'])} ms"
        f" ({diff['latency']['count']} changes) | |",
        "| latency, naive: commit to the reload that shows it | | p50"
        f" {_s(naive['latency_real']['p50_ms'])} s, p99"
        f" {_s(naive['latency_real']['p99_ms'])} s in real time"
        f" (measured compressed: p50 {fmt_ms(naive['latency_compressed']['p50_ms'])} ms, p99"
        f" {fmt_ms(naive['latency_compressed']['p99_ms'])} ms) | |",
        f"| loss | zero lost | differential: {diff['delivered']} of {data['view_changes']}"
        f" changes delivered, {diff['lost']} lost; naive: {naive['shown']} shown,"
        f" {naive['not_shown']} never shown | {verdict(_no_loss(data))} |",
        "",
        f"Where the bytes went, {minutes:.0f} minutes:",
        "",
        "| | differential | naive |",
        "| --- | ---: | ---: |",
        f"| initial load: headers / body | {dr['snapshot_headers']:,} / {dr['snapshot_body']:,}"
        f" B | {nr['first_headers']:,} / {nr['first_body']:,} B |",
        f"| reloads: {naive['reloads']}, {naive['reload_bytes']:,} B each (median) | |"
        f" {_kb(nr['reloads'])} |",
        f"| WebSocket handshake | {dr['handshake']:,} B | |",
        f"| `hello` and `subscribed` (50 contexts) | {dr['hello_subscribed']:,} B | |",
        f"| catch-up frames without items: {counts['catch_up_empty']} |"
        f" {dr['catch_up_empty']:,} B | |",
        f"| batches: {counts['batches']} frames, {counts['items']} items | {dr['batches']:,} B | |",
        f"| heartbeats: {counts['heartbeats']} | {dr['heartbeats']:,} B | |",
        f"| pongs to the client's {counts['pings_sent']} pings | {dr['pongs']:,} B | |",
        f"| WebSocket pings and pongs from the server: {counts['ws_pings']} |"
        f" {dr['ws_control']:,} B | |",
        f"| other frames / not yet parsed | {dr['other']:,} / {dr['unaccounted']:,} B | |",
        f"| **received in all** | **{_kb(dr['total'])}** | **{_kb(nr['total'])}** |",
        f"| sent by the client | {_kb(diff['sent']['total'])} | {_kb(naive['sent']['total'])} |",
        f"| estimate with TLS 1.3 and IPv4/TCP headers (1500-byte MTU), received |"
        f" {_kb(diff['internet_estimate'])} | {_kb(naive['internet_estimate'])} |",
        "",
        *bandwidth_notes(data),
        "",
    ]
    return lines


def _s(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _no_loss(data: dict) -> bool:
    diff, naive = data["differential"], data["naive"]
    return diff["lost"] == 0 and naive["not_shown"] == 0 and data["converged"]["differ"] == 0


def bandwidth_notes(data: dict) -> list[str]:
    diff, naive = data["differential"], data["naive"]
    dr = diff["received"]
    counts = diff["counts"]
    factor = data["factor"]
    minutes = data["real_s"] / 60
    setup = sum(
        dr[k]
        for k in (
            "snapshot_headers",
            "snapshot_body",
            "handshake",
            "hello_subscribed",
            "catch_up_empty",
        )
    )
    gzip_total = naive["received"]["total"] - naive["loads"] * (
        naive["body_bytes"] - naive["body_gzip_bytes"]
    )
    notes = [
        f"- Setting up cost the differential client {_kb(setup)} (snapshot, handshake,"
        f" `hello`, `subscribed`, catch-up); following the view for {minutes:.0f} minutes"
        f" then cost {_kb(dr['total'] - setup)}: {_kb(dr['batches'])} of batches for"
        f" {data['view_changes']} changes (median one-item frame"
        f" {diff['one_item_frame_bytes']} B, of which 70 to 85 B are the bench's stamp in"
        f" `source`) and {_kb(dr['heartbeats'] + dr['pongs'])} of"
        " heartbeats and pongs that keep the link checked. The naive client pays the whole"
        " page on every reload, whether or not anything changed.",
        f"- Catch-up frames without items: one app-wide change was published between the"
        f" snapshot and the subscribe (at {data['background_rate']:g}/s and a browser's few"
        " hundred ms from one to the other, that is the common case), so each context's"
        " catch-up had nothing to send but its cursor's advance: one `batch` with no"
        f" `changes` per context, {counts['catch_up_empty']} frames,"
        f" {_kb(dr['catch_up_empty'])} on every page load.",
        f"- The naive latency is the reload interval: a change waits on average half of it"
        f" for the next reload. Measured in compressed time (reload every"
        f" {data['reload_s'] / factor:.2f} s), it is converted to real time by multiplying the"
        f" wait for the next reload by {factor:g} and adding the request's own time"
        f" (p50 {naive['request_ms_p50']} ms). The differential latency needs no conversion:"
        " a change travels alone at these rates.",
        f"- The server sends the JSON uncompressed (no gzip middleware, and the web server"
        " declines permessage-deflate: config/serve.py says why). Were a proxy to gzip the"
        " REST answers, a page would be"
        f" {naive['body_gzip_bytes']:,} B instead of {naive['body_bytes']:,} B and the naive"
        f" client would receive about {_kb(gzip_total)}: still"
        f" {gzip_total / dr['total']:.1f}x the differential client.",
        f"- The differential client's page matched the last reload for"
        f" {data['converged']['companies'] - data['converged']['differ']} of"
        f" {data['converged']['companies']} companies at the end; "
        f"{diff['coalesced']} changes arrived merged into a later one of the same record,"
        f" {diff['after_window']} after the window. The naive client used"
        f" {data['naive_connections']} keep-alive connection(s).",
    ]
    if diff.get("closed"):
        notes.append(f"- The WebSocket ended early: {diff['closed']}.")
    return notes
