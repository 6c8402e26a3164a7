"""The publisher's extension points: what the apps above do with a batch.

`changes` is the bottom of the spine (docs/architecture.md) and imports nothing above it.
The apps that act on a batch register here from their AppConfig.ready(), by name, so a
second registration under the same name replaces the first:

- `batch_read(name)`: inside the batch's transaction, under the publisher's lock, after
  the changes are claimed and before the batch moves anything (the companies' latest
  totals, the running totals, the log). Reads the state as it was: notifications take
  the industries' rankings, adminpanel the maintenance switch (which takes the same lock).
- `batch_write(name)`: inside the transaction, once the batch is logged and routed and
  before it commits: notifications are created with the changes that made them.
- `frames_filter(name)`: which of a committed batch's frames go out now (maintenance
  holds back all but the critical ones; the rest are read from the log later).
- `frames_sender`: how frames reach the server processes (realtime's broadcast). One.
- `after_fan_out(name)` (async): once the frames went out (notifications are sent).
- `after_batch(name)`: after the batch and its fan-out, or after a run that found nothing
  or lost the lock (result None): the publisher's metrics, benchmark recomputes.
- `publisher_idle(name)`: the running publisher found nothing to publish (metrics flush).
  Run in the publisher's event loop at every idle probe (100 a second): quick checks
  in memory, and no database.

What a read or write hook returns is kept in `PublishResult.extras` under its name, for
the later hooks of the same app. A hook inside the transaction that raises rolls the
batch back (it is published again by the next run); one after the commit is logged and
the others still run.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datetime as dt

    from changes.items import CapturedChange
    from changes.publisher import Frame, PublishResult

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """What a batch hook sees of the batch being published."""

    cursor: Any
    changes: list[CapturedChange]
    # Industry id -> slug, as the publisher read it for this batch.
    slugs: dict[str, str]
    # The transaction's clock, once the batch is logged (None in read hooks).
    now: dt.datetime | None = None
    # The aggregate changes the batch produced (write hooks).
    aggregates: list[CapturedChange] = field(default_factory=list)
    # What the read hooks returned, by name (and, after them, the write hooks).
    extras: dict[str, Any] = field(default_factory=dict)


BatchHook = Callable[[Batch], Any]
FramesFilter = Callable[["PublishResult", list["Frame"]], list["Frame"]]
FramesSender = Callable[[list["Frame"]], Awaitable[None]]
AfterFanOut = Callable[["PublishResult"], Awaitable[None]]
AfterBatch = Callable[["PublishResult | None", "int | None"], None]
Idle = Callable[[], None]

_batch_read: dict[str, BatchHook] = {}
_batch_write: dict[str, BatchHook] = {}
_frames_filters: dict[str, FramesFilter] = {}
_after_fan_out: dict[str, AfterFanOut] = {}
_after_batch: dict[str, AfterBatch] = {}
_idle: dict[str, Idle] = {}
_sender: list[FramesSender] = []


def _registrar(registry: dict[str, Callable]) -> Callable[[str], Callable]:
    def register(name: str) -> Callable:
        def decorator(fn: Callable) -> Callable:
            registry[name] = fn
            return fn

        return decorator

    return register


batch_read = _registrar(_batch_read)
batch_write = _registrar(_batch_write)
frames_filter = _registrar(_frames_filters)
after_fan_out = _registrar(_after_fan_out)
after_batch = _registrar(_after_batch)
publisher_idle = _registrar(_idle)


def frames_sender(fn: FramesSender) -> FramesSender:
    """Register how frames reach the server processes (replacing any before)."""
    _sender[:] = [fn]
    return fn


# -- run by the publisher -------------------------------------------------------------------


def batch_read_run(batch: Batch) -> None:
    for name, hook in _batch_read.items():
        batch.extras[name] = hook(batch)


def batch_write_run(batch: Batch) -> None:
    for name, hook in _batch_write.items():
        batch.extras[name] = hook(batch)


def frames_filtered(result: PublishResult) -> list[Frame]:
    frames = result.frames
    for hook in _frames_filters.values():
        frames = hook(result, frames)
    return frames


async def frames_send(frames: list[Frame]) -> None:
    if not frames:
        return
    if not _sender:
        raise RuntimeError(
            "no frames sender is registered (changes.hooks.frames_sender): is the realtime "
            "app in INSTALLED_APPS?"
        )
    await _sender[0](frames)


async def after_fan_out_run(result: PublishResult) -> None:
    for name, hook in _after_fan_out.items():
        try:
            await hook(result)
        except Exception:
            logger.exception("the publisher's after-fan-out hook %r failed", name)


def after_batch_run(result: PublishResult | None, sent_frames: int | None) -> None:
    for name, hook in _after_batch.items():
        try:
            hook(result, sent_frames)
        except Exception:
            logger.exception("the publisher's after-batch hook %r failed", name)


def publisher_idle_run() -> None:
    for name, hook in _idle.items():
        try:
            hook()
        except Exception:
            logger.exception("the publisher's idle hook %r failed", name)
