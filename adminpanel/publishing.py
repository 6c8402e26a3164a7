"""What the operators' side does with the publisher's batches (changes/hooks.py): the
maintenance switch holds back all but critical frames, and the publisher's figures are
counted for /metrics and the monitoring page."""

from __future__ import annotations

from adminpanel.metrics import (
    publisher_batch_record,
    publisher_metrics_flush,
    publisher_metrics_flush_due,
)
from adminpanel.selectors import maintenance_active_locked
from changes.hooks import Batch, after_batch, batch_read, frames_filter, publisher_idle
from changes.publisher import Frame, PublishResult

MAINTENANCE = "adminpanel.maintenance"


@batch_read(MAINTENANCE)
def maintenance_read(batch: Batch) -> bool:
    """Whether maintenance is on, read under the publisher's lock (which the switch takes
    too): a batch is published wholly before a switch or wholly after it."""
    return maintenance_active_locked(batch.cursor)


def batch_under_maintenance(result: PublishResult) -> bool:
    return bool(result.extras.get(MAINTENANCE))


@frames_filter(MAINTENANCE)
def critical_only_during_maintenance(result: PublishResult, frames: list[Frame]) -> list[Frame]:
    """The frames of a batch to send: all of them, or while maintenance is on only those
    that carry a critical change. The others are committed like any batch; receivers read
    them from the log when the next frame of their context shows the gap (its prev_seq)
    or when maintenance ends (every hub then compares its contexts with the heads)."""
    if not batch_under_maintenance(result):
        return frames
    return [
        frame
        for frame in frames
        if any(item.get("significance") == "critical" for item in frame.message["changes"])
    ]


@after_batch("adminpanel.metrics")
def batch_count(result: PublishResult | None, sent_frames: int | None) -> None:
    publisher_batch_record(result, sent_frames=sent_frames)


@publisher_idle("adminpanel.metrics")
def figures_flush() -> None:
    """Idle: the last batches' figures go to Redis now (once the flush interval passed),
    not with the next batch."""
    if publisher_metrics_flush_due():
        publisher_metrics_flush()
