"""One measured cell: the writer at a rate while the load generators listen, their
reports merged into one figure set, and its one-line summary."""

from __future__ import annotations

import os
import threading
import time

from bench.harness.fleet import Fleet, answers_summed
from bench.harness.processes import CpuMeter, pids_named
from bench.harness.stack import Stack
from bench.harness.writer import Writer, stages


def hist_percentile(hist: dict[int, int], q: float, bucket_us: int) -> float | None:
    """The q-quantile (0..1) of a 100 us histogram, in ms (bucket middle)."""
    total = sum(hist.values())
    if not total:
        return None
    rank = q * (total - 1)
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen > rank:
            return (bucket + 0.5) * bucket_us / 1000
    return (max(hist) + 0.5) * bucket_us / 1000


def reports_merge(reports: list[dict]) -> dict:
    """One figure set from the load generators' reports of one window."""
    hist: dict[int, int] = {}
    bucket_us = reports[0]["latency"]["bucket_us"]
    per_change: dict[int, list[int]] = {}
    for report in reports:
        for bucket, count in report["latency"]["hist"].items():
            hist[int(bucket)] = hist.get(int(bucket), 0) + count
        for stamp, values in report.get("per_change", {}).items():
            per_change.setdefault(int(stamp), []).extend(values)
    count = sum(r["latency"]["count"] for r in reports)
    by_kind: dict[str, dict[int, int]] = {}
    for report in reports:
        for kind, kind_hist in report["latency"].get("by_kind", {}).items():
            into = by_kind.setdefault(kind, {})
            for bucket, n in kind_hist.items():
                into[int(bucket)] = into.get(int(bucket), 0) + n
    summed = [
        "frames_in_window",
        "items_in_window",
        "items_expected",
        "items_received",
        "coalesced",
        "lost",
        "unexpected",
        "clients_with_loss",
        "clients",
        "open",
        "closed_by_server",
        "duplicates",
        "gaps",
        "resets",
        "errors",
    ]
    out = answers_summed(reports, summed)

    lost_by_context: dict[str, int] = {}
    for report in reports:
        for context, lost in report["lost_by_context"].items():
            lost_by_context[context] = lost_by_context.get(context, 0) + lost
    out.update(
        {
            "stamped_items": count,
            "p50_ms": hist_percentile(hist, 0.50, bucket_us),
            "p95_ms": hist_percentile(hist, 0.95, bucket_us),
            "p99_ms": hist_percentile(hist, 0.99, bucket_us),
            "max_ms": max(r["latency"]["max_us"] for r in reports) / 1000 if count else None,
            "mean_ms": sum(r["latency"]["sum_us"] for r in reports) / count / 1000
            if count
            else None,
            "lost_by_context": dict(sorted(lost_by_context.items(), key=lambda kv: -kv[1])[:5]),
            "by_kind": {
                kind: {
                    "items": sum(h.values()),
                    "p50_ms": hist_percentile(h, 0.50, bucket_us),
                    "p99_ms": hist_percentile(h, 0.99, bucket_us),
                }
                for kind, h in sorted(by_kind.items())
            },
            "loadgen_loop_lag_ms": {
                key: max((r["loop_lag_ms"][key] or 0) for r in reports)
                for key in ("p50", "p99", "max")
            },
        }
    )
    if per_change:
        out["per_change"] = per_change
    return out


def measure(
    stack: Stack,
    fleet: Fleet,
    writer: Writer,
    *,
    rate: float,
    warmup: float,
    seconds: float,
    pick,
    label: str,
    per_change: bool = False,
    drain_timeout: float = 15,
    loss_seq_lo: int | None = None,
) -> dict:
    """Write at `rate` for warmup + seconds; figures of the last `seconds`. The loss check
    covers the same changes, or with `loss_seq_lo=0` everything since each client
    subscribed (the warm-up and whatever else was published meanwhile)."""
    meter = CpuMeter(
        {
            "web": stack.web_pids(),
            # HAProxy's master and its worker (which does the forwarding).
            "haproxy": pids_named("haproxy") if stack.haproxy else [],
            "publisher": [stack.pid("publisher")],
            "loadgens": fleet.pids,
            "redis": pids_named("redis-server"),
            "bench": [os.getpid()],  # this process: the writer thread
        }
    )
    stats: dict = {}
    thread = threading.Thread(target=writer.run, args=(rate, warmup + seconds, pick, stats))
    thread.start()
    time.sleep(warmup)
    seq_lo = writer.head_seq()
    from_ns = time.time_ns()
    first = meter.snapshot()
    pending_max, lag_max, unanswered = 0, 0, 0
    while thread.is_alive():
        status = stack.status_or_none(timeout=2)
        if status is None:
            unanswered += 1
        else:
            pending_max = max(pending_max, status["pending"])
            lag_max = max(lag_max, status["lag_ms"])
        thread.join(1.0)
    to_ns = writer.last_stamp_ns
    writer_done = time.monotonic()
    last = meter.snapshot()
    status_end = stack.status_or_none(timeout=2) or {"pending": None, "lag_ms": None}
    stack.publisher_idle()
    drained = fleet.drain(drain_timeout)
    # From the last change to every client at its context's head (the drain polls at 50 ms).
    caught_up_s = time.monotonic() - writer_done
    seq_hi = writer.head_seq()
    window = {
        "label": label,
        "from_ns": from_ns,
        "to_ns": to_ns,
        "seq_lo": seq_lo if loss_seq_lo is None else loss_seq_lo,
        "seq_hi": seq_hi,
        "per_change": per_change,
    }
    merged = reports_merge(fleet.report(window))
    window_s = (to_ns - from_ns) / 1e9
    merged.update(
        {
            "label": label,
            "rate": rate,
            "window_s": round(window_s, 2),
            "writer": stats,
            "deliveries_per_s": round(merged["frames_in_window"] / window_s),
            "items_per_s": round(merged["items_in_window"] / window_s),
            "seq_lo": seq_lo,
            "seq_hi": seq_hi,
            "drain_s": round(caught_up_s, 2),
            "behind_after_drain": drained["behind"],
            "publisher": {
                "pending_max": pending_max,
                "lag_ms_max": lag_max,
                "pending_end": status_end["pending"],
                "lag_ms_end": status_end["lag_ms"],
                # Status requests the web server did not answer within 2 s.
                "status_unanswered": unanswered,
            },
            "cpu_cores": CpuMeter.cores(first, last),
            "web_rss_kb": stack.rss_kb(),
            "stages": stages(stack.database_url, seq_lo, seq_hi),
            "web_gc": stack.gc_pauses(from_ns / 1e9, to_ns / 1e9),
        }
    )
    return merged


def cell_line(cell: dict) -> str:
    def ms(value):
        return "-" if value is None else f"{value:.1f}"

    cpu = cell["cpu_cores"]
    return (
        f"{cell['server']:8} N={cell['clients']:5} rate={cell['rate']:4} "
        f"p50={ms(cell['p50_ms'])} p95={ms(cell['p95_ms'])} p99={ms(cell['p99_ms'])} "
        f"max={ms(cell['max_ms'])} ms  deliveries/s={cell['deliveries_per_s']} "
        f"items/s={cell['items_per_s']} lost={cell['lost']} dup={cell['duplicates']} "
        f"gaps={cell['gaps']} lag_max={cell['publisher']['lag_ms_max']} ms "
        f"rss={cell['web_rss_kb'] // 1024} MB cpu web={cpu['web']} pub={cpu['publisher']} "
        f"loadgens={cpu['loadgens']} (max {cpu['loadgen_max']}) pg={cpu['postgres']} "
        f"others={cpu['others']} machine={cpu['machine']} lag(loadgen loop p99/max)="
        f"{cell['loadgen_loop_lag_ms']['p99']}/{cell['loadgen_loop_lag_ms']['max']} ms "
        f"stages={cell['stages']} by_kind={cell['by_kind']} gc={cell['web_gc']}"
    )
