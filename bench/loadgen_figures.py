"""A load generator's figures for one window (bench/loadgen.py's `report`): the
latency histogram of the stamped items, frames and items per 100 ms, and the loss check
against the change log's routes."""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections import Counter

import psycopg

from bench.loadgen_clients import KINDS, RATE_BUCKET_NS, Client, Recorder, Stream

BUCKET_US = 100
ROUTES_SQL = """
SELECT r.context, r.seq, d.entity, d.record_id
  FROM change_routes r JOIN data_changes d ON d.seq = r.seq
 WHERE r.context = ANY(%s) AND r.seq > %s AND r.seq <= %s AND (r.audiences & 1) <> 0
 ORDER BY r.context, r.seq
"""


def latencies(rec: Recorder, from_ns: int, to_ns: int, per_change: bool) -> dict:
    """The latency histogram (overall and by context kind) of the stamped items whose
    commit time lies in [from_ns, to_ns], and the event loop's lateness meanwhile;
    forgets what it covered."""
    hist: Counter[int] = Counter()
    by_kind: dict[str, Counter[int]] = {}
    by_change: dict[int, list[int]] = {}
    keep_ts, keep_us, keep_kind = array("q"), array("q"), array("b")
    count, max_us, sum_us = 0, 0, 0
    for stamp, us, kind in zip(rec.stamp_ns, rec.latency_us, rec.kind, strict=True):
        if stamp < from_ns:
            continue
        if stamp > to_ns:
            keep_ts.append(stamp)
            keep_us.append(us)
            keep_kind.append(kind)
            continue
        us = max(us, 0)
        count += 1
        sum_us += us
        max_us = max(max_us, us)
        hist[us // BUCKET_US] += 1
        name = KINDS[kind]
        if name not in by_kind:
            by_kind[name] = Counter()
        by_kind[name][us // BUCKET_US] += 1
        if per_change:
            by_change.setdefault(stamp, []).append(us)
    # In place: every client's reader holds these very arrays.
    rec.stamp_ns[:] = keep_ts
    rec.latency_us[:] = keep_us
    rec.kind[:] = keep_kind
    lags = sorted(
        lag
        for at, lag in zip(rec.loop_lag_at, rec.loop_lag_us, strict=True)
        if from_ns <= at <= to_ns
    )
    del rec.loop_lag_at[:], rec.loop_lag_us[:]
    out = {
        "latency": {
            "count": count,
            "sum_us": sum_us,
            "max_us": max_us,
            "bucket_us": BUCKET_US,
            "hist": _hist_json(hist),
            "by_kind": {name: _hist_json(h) for name, h in by_kind.items()},
        },
        # How late this process's event loop ran its 5 ms ticks: a generator that
        # cannot keep up shows here before it shows anywhere else.
        "loop_lag_ms": {
            "p50": lags[len(lags) // 2] / 1000 if lags else None,
            "p99": lags[int(len(lags) * 0.99)] / 1000 if lags else None,
            "max": lags[-1] / 1000 if lags else None,
        },
    }
    if per_change:
        out["per_change"] = {str(k): v for k, v in sorted(by_change.items())}
    return out


def rates(rec: Recorder, from_ns: int, to_ns: int) -> dict:
    """Frames and items received in [from_ns, to_ns]; forgets what it covered."""
    lo, hi = from_ns // RATE_BUCKET_NS, to_ns // RATE_BUCKET_NS
    frames = sum(v for k, v in rec.frames.items() if lo <= k < hi)
    items = sum(v for k, v in rec.items.items() if lo <= k < hi)
    for counter in (rec.frames, rec.items):
        for key in [k for k in counter if k < hi]:
            del counter[key]
    return {"frames_in_window": frames, "items_in_window": items}


async def loss(database_url: str, clients: list[Client], seq_lo: int, seq_hi: int) -> dict:
    """The loss check of `clients` (the open ones) over (seq_lo, seq_hi]: what the change
    log routed to their contexts against what each received."""
    contexts = sorted({ctx for c in clients for ctx in c.streams})
    routes: dict[str, list[int]] = {ctx: [] for ctx in contexts}
    record_of: dict[int, tuple[str, str]] = {}
    if contexts and seq_hi > seq_lo:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            cursor = await conn.execute(ROUTES_SQL, [contexts, seq_lo, seq_hi])
            for context, seq, entity, record_id in await cursor.fetchall():
                routes[context].append(seq)
                record_of[seq] = (entity, record_id)
    totals = Counter()
    clients_with_loss = 0
    lost_contexts: Counter[str] = Counter()
    cache: dict[tuple, tuple[int, int, int, int, int]] = {}
    for client in clients:
        client_lost = 0
        for ctx, stream in client.streams.items():
            lo = max(seq_lo, stream.start)
            i, j = bisect_right(stream.seqs, lo), bisect_right(stream.seqs, seq_hi)
            received = stream.seqs[i:j]
            key = (
                ctx,
                lo,
                received.tobytes(),
                stream.frame_lo.tobytes(),
                stream.frame_hi.tobytes(),
            )
            figures = cache.get(key)
            if figures is None:
                expected = routes.get(ctx, [])
                start = bisect_right(expected, lo)
                figures = cache[key] = _stream_loss(expected[start:], received, stream, record_of)
            exp, got, coalesced, lost, unexpected = figures
            totals.update(
                expected=exp,
                received=got,
                coalesced=coalesced,
                lost=lost,
                unexpected=unexpected,
            )
            if lost:
                lost_contexts[ctx] += lost
            client_lost += lost
        clients_with_loss += client_lost > 0
    return {
        "items_expected": totals["expected"],
        "items_received": totals["received"],
        "coalesced": totals["coalesced"],
        "lost": totals["lost"],
        "unexpected": totals["unexpected"],
        "clients_with_loss": clients_with_loss,
        "lost_by_context": dict(lost_contexts.most_common(5)),
    }


def _hist_json(hist: Counter[int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(hist.items())}


def _stream_loss(
    expected: list[int], received: array, stream: Stream, record_of: dict
) -> tuple[int, int, int, int, int]:
    """(expected, received, coalesced, lost, unexpected) for one client and context."""
    got = set(received)
    coalesced = lost = 0
    frame_lo, frame_hi = stream.frame_lo, stream.frame_hi
    for seq in expected:
        if seq in got:
            continue
        k = bisect_left(frame_hi, seq)
        if k < len(frame_hi) and frame_lo[k] < seq:
            record = record_of.get(seq)
            a, b = bisect_right(received, seq), bisect_right(received, frame_hi[k])
            if any(record_of.get(later) == record for later in received[a:b]):
                coalesced += 1
                continue
        lost += 1
    unexpected = len(got.difference(expected))
    return len(expected), len(received), coalesced, lost, unexpected
