"""What the web process says during a slow readers' phase (bench/slow_readers.py): its
/metrics and RSS sampled on a thread, its event loop's lateness, the slow-client
cut-offs, and the wait until it let the slow readers go."""

from __future__ import annotations

import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from bench.harness.processes import proc_rss_kb
from bench.harness.stack import Stack

SAMPLE_S = 1.0  # how often /metrics and the RSS are read, in both kinds of phase
SETTLE_S = 20  # at most this long for the server to release the slow readers' sessions


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
