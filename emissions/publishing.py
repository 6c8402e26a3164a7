"""What the tracked domain does with the publisher's batches (changes/hooks.py): the
benchmarks of every industry whose records a batch changed are recomputed, debounced."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.cache import cache

from changes.hooks import after_batch
from changes.publisher import PublishResult
from emissions.tasks import industry_benchmarks_recompute_task

logger = logging.getLogger(__name__)

# Industries this process has scheduled a recompute for, and until when (monotonic):
# the recompute runs at the end of the window and reads every change committed before
# it, so until shortly before then nothing needs asking Redis again. At 200 changes/s a
# batch touches most industries, and a cache.add round trip for each was a fifth of the
# publisher's time.
_benchmarks_due_until: dict[str, float] = {}


def benchmarks_schedule(*, industry_ids: set[str]) -> None:
    """Queue a benchmark recompute per industry, at most one per debounce window."""
    if not industry_ids:
        return
    window = settings.BENCHMARK_DEBOUNCE_SECONDS
    now = time.monotonic()
    for industry_id in sorted(industry_ids):
        if _benchmarks_due_until.get(industry_id, 0.0) > now:
            continue
        # cache.add is atomic in Redis: only the first batch of a window, over every
        # publisher process, schedules.
        if not cache.add(f"benchmarks-due:{industry_id}", 1, timeout=window):
            continue  # another batch (maybe another process) scheduled it
        try:
            industry_benchmarks_recompute_task.apply_async(args=[industry_id], countdown=window)
        except Exception:
            cache.delete(f"benchmarks-due:{industry_id}")
            logger.exception("could not queue the benchmark recompute of %s", industry_id)
            continue
        # A margin before the task's countdown ends: a change committed after the memo
        # expires asks Redis again (and schedules the next window if the task ran).
        _benchmarks_due_until[industry_id] = now + window * 0.9


@after_batch("emissions.benchmarks")
def benchmarks_due(result: PublishResult | None, sent_frames: int | None) -> None:
    """Queue the benchmark recomputes a committed batch makes due. If Redis is away,
    scheduling fails and is logged; the batch is unaffected."""
    if result is None or not result.industries_touched:
        return
    try:
        benchmarks_schedule(industry_ids=result.industries_touched)
    except Exception:
        logger.exception("could not schedule benchmark recomputes")
