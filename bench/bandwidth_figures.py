"""The bandwidth scenario's figures (bench/bandwidth.py): bytes each way by kind, latency
from change to screen, what the naive client missed, and whether both views converged."""

from __future__ import annotations

import gzip

from bench.bandwidth_clients import Differential, page_totals
from bench.bandwidth_plan import Change
from bench.bandwidth_wire import internet_bytes


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_figures(values_ms: list[float]) -> dict:
    return {
        "count": len(values_ms),
        "p50_ms": _round(percentile(values_ms, 0.5)),
        "p99_ms": _round(percentile(values_ms, 0.99)),
        "max_ms": _round(max(values_ms, default=None)),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def differential_figures(run: dict, view: list[Change]) -> dict:
    state: Differential = run["state"]
    counters = run["counters"]
    snapshot = state.snapshot
    received = counters["received"]
    frames = sum(t["bytes"] for t in received.values())
    handshake = counters["raw_received"] - frames
    sent_frames = sum(t["bytes"] for t in counters["sent"].values())
    latency, lost, coalesced, late = [], 0, 0, 0
    window_end_ns = run["opened_ns"] + run["window_s"] * 1e9
    for change in view:
        got = state.stamps.get(change.stamp_ns)
        if got is not None:
            latency.append((got - change.stamp_ns) / 1e6)
            late += got > window_end_ns
            continue
        # PROTOCOL.md: changes of one record in one batch may be merged into the last.
        merged = any(
            c.record_id == change.record_id
            and c.stamp_ns > change.stamp_ns
            and c.stamp_ns in state.stamps
            for c in view
        )
        coalesced += merged
        lost += not merged
    count = lambda kind: received.get(kind, {"count": 0})["count"]  # noqa: E731
    size = lambda kind: received.get(kind, {"bytes": 0})["bytes"]  # noqa: E731
    known = {"hello", "subscribed", "batch", "batch_empty", "heartbeat", "pong"}
    known |= {"ws_ping", "ws_pong"}
    return {
        "received": {
            "total": snapshot.received + counters["tcp_received"],
            "snapshot_headers": snapshot.headers,
            "snapshot_body": snapshot.wire_body,
            "handshake": handshake,
            "hello_subscribed": size("hello") + size("subscribed"),
            "catch_up_empty": size("batch_empty"),
            "batches": size("batch"),
            "heartbeats": size("heartbeat"),
            "pongs": size("pong"),
            "ws_control": size("ws_ping") + size("ws_pong"),
            "other": sum(t["bytes"] for k, t in received.items() if k not in known),
            "unaccounted": counters["tcp_received"] - counters["raw_received"],
        },
        "sent": {
            "total": snapshot.sent + counters["tcp_sent"],
            "snapshot_request": snapshot.sent,
            "handshake": counters["tcp_sent"] - sent_frames,
            "subscribe": counters["sent"].get("subscribe", {"bytes": 0})["bytes"],
            "pings": counters["sent"].get("ping", {"bytes": 0})["bytes"],
            "ws_pongs": counters["sent"].get("ws_pong", {"bytes": 0})["bytes"],
        },
        "counts": {
            "catch_up_empty": count("batch_empty"),
            "batches": count("batch"),
            "items": state.items,
            "unexpected_items": state.unexpected,
            "heartbeats": count("heartbeat"),
            "pongs": count("pong"),
            "pings_sent": counters["sent"].get("ping", {"count": 0})["count"],
            "ws_pings": count("ws_ping"),
        },
        "one_item_frame_bytes": percentile(state.one_item_frames, 0.5),
        "internet_estimate": internet_bytes(
            [snapshot.received]
            + [handshake]
            + [s for sizes in counters["received_sizes"].values() for s in sizes]
        ),
        "latency": latency_figures(latency),
        "delivered": len(latency),
        "after_window": late,
        "coalesced": coalesced,
        "lost": lost,
        "closed": state.closed,
    }


def shown_by(change: Change, later: list[Change], exchanges: list) -> tuple | None:
    """The first reload (started ns, done ns) whose page shows `change` or a later change
    of the same record: its company's total equals one of theirs."""
    totals = {c.total_after for c in later}
    for exchange, page in exchanges:
        if exchange.done_ns > change.stamp_ns and page[change.company_id]["total"] in totals:
            return exchange.started_ns, exchange.done_ns
    return None


def naive_figures(run: dict, view: list[Change], factor: float) -> dict:
    loads = [run["first"], *run["exchanges"]]
    pages = [(e, page_totals(e.body)) for e in run["exchanges"]]
    compressed, real, unseen = [], [], 0
    for change in view:
        later = [
            c for c in view if c.record_id == change.record_id and c.stamp_ns >= change.stamp_ns
        ]
        seen = shown_by(change, later, pages)
        if seen is None:
            unseen += 1
            continue
        started, done = seen
        compressed.append((done - change.stamp_ns) / 1e6)
        # The wait for the next reload is what the compression shortened; the request's
        # own time (and a change published during it) is not.
        waited = max(0, started - change.stamp_ns)
        real.append((waited * factor + done - max(started, change.stamp_ns)) / 1e6)
    reloads = run["exchanges"]
    first = loads[0]
    return {
        "received": {
            "total": sum(e.received for e in loads),
            "first_headers": first.headers,
            "first_body": first.wire_body,
            "reloads": sum(e.received for e in reloads),
            "headers": sum(e.headers for e in loads),
            "bodies": sum(e.wire_body for e in loads),
        },
        "sent": {"total": sum(e.sent for e in loads)},
        "loads": len(loads),
        "reloads": len(reloads),
        "reload_bytes": percentile([e.received for e in reloads], 0.5),
        "reload_headers": percentile([e.headers for e in reloads], 0.5),
        "request_bytes": percentile([e.sent for e in reloads], 0.5),
        "request_ms_p50": _round(
            percentile([(e.done_ns - e.started_ns) / 1e6 for e in reloads], 0.5)
        ),
        "body_gzip_bytes": len(gzip.compress(first.body)),
        "body_bytes": len(first.body),
        "internet_estimate": internet_bytes([e.received for e in loads]),
        "latency_compressed": latency_figures(compressed),
        "latency_real": latency_figures(real),
        "shown": len(compressed),
        "not_shown": unseen,
    }


def converged(run: dict) -> dict:
    """The differential client's page against the last reload's."""
    last = page_totals(run["exchanges"][-1].body) if run["exchanges"] else {}
    mine = run["state"].page
    differ = [c for c in last if last[c]["total"] != mine.get(c, {}).get("total")]
    return {"companies": len(last), "differ": len(differ)}
