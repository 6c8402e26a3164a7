"""Following context streams from a lossy channel layer, without losing a change.

Every published frame carries `prev_seq`, the `seq_to` of the frame before it in the
same context and audience. A follower remembers the last seq it passed on per context;
a frame whose `prev_seq` is above that means frames were dropped on the way (a full
channel, a Redis restart), so the follower reads the missing changes from the log
first, then passes the frame on, dropping what it already delivered.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from changes.items import items_coalesce
from changes.selectors import CatchUp, changes_since
from common.json import json_dumps

logger = logging.getLogger(__name__)

Fetch = Callable[..., Awaitable[CatchUp]]


@dataclass(frozen=True)
class OutFrame:
    """An encoded frame to pass on: a batch following `prev_seq`, with items from
    `seq_from` to `seq_to`, or a reset."""

    prev_seq: int
    seq_from: int
    seq_to: int
    text: str
    reset: bool = False
    # Changes routed to the context in it (before coalescing), when known.
    routed: int | None = None


async def fetch_from_log(
    *, context: str, after: int, audience: str, limit: int, through: int = 0
) -> CatchUp:
    """changes_since for one context, from async code; from a database whose head is at
    least `through` (a read replica behind it would leave the gap open)."""
    return await database_sync_to_async(changes_since)(
        cursors={context: after}, audience=audience, limit=limit, fresh_through=through
    )


def batch_frame(context: str, prev_seq: int, seq_to: int, items: list[dict]) -> str:
    """An encoded `batch` message for items read from the log."""
    return json_dumps(
        {
            "type": "batch",
            "context": context,
            "seq_from": items[0]["seq"] if items else seq_to,
            "seq_to": seq_to,
            "prev_seq": prev_seq,
            "changes": items_coalesce(items),
        }
    )


def reset_frame(context: str, reason: str, epoch: str, seq: int) -> str:
    return json_dumps(
        {"type": "reset", "context": context, "reason": reason, "epoch": epoch, "seq": seq}
    )


class RecentFrames:
    """The frames a follower passed on lately for one context, as one unbroken chain.

    A client that comes back after a few seconds (a dropped network, a slow reader cut
    off, a reconnect storm after a proxy restart) resumes from a cursor these frames
    usually cover: it is answered from memory, with the very frames it would have had
    live, instead of a read of the log and a re-encoding of every item on the process's
    one database thread (whose work also holds up every other connection's deliveries).
    Bounded by bytes and by age per context (REALTIME_RECENT_FRAMES_BYTES and
    REALTIME_RECENT_FRAMES_S).
    """

    __slots__ = ("frames", "size")

    def __init__(self) -> None:
        self.frames: deque[tuple[float, OutFrame]] = deque()
        self.size = 0

    def add(self, frame: OutFrame, now: float) -> None:
        if frame.reset or (
            self.frames and not (frame.prev_seq <= self.frames[-1][1].seq_to < frame.seq_to)
        ):
            # A reset, a gap the log could not fill yet, or a log begun anew: what is
            # kept no longer leads to what comes next.
            self.clear()
        if frame.reset or settings.REALTIME_RECENT_FRAMES_S <= 0:
            return
        self.frames.append((now, frame))
        self.size += len(frame.text)
        self.trim(now)

    def trim(self, now: float) -> None:
        limit = settings.REALTIME_RECENT_FRAMES_BYTES
        oldest = now - settings.REALTIME_RECENT_FRAMES_S
        while self.frames and (self.size > limit or self.frames[0][0] < oldest):
            self.size -= len(self.frames.popleft()[1].text)

    def clear(self) -> None:
        self.frames.clear()
        self.size = 0

    def after(self, seq: int, *, most: int) -> list[OutFrame] | None:
        """The frames that carry everything after `seq` up to the newest passed on, or
        None when the kept chain does not reach back to `seq`, `seq` is beyond it (a
        frame still on its way, or a cursor from another log), or it could hold more than
        `most` changes: the log then decides, with a reset where it must."""
        if not self.frames or not self.frames[0][1].prev_seq <= seq <= self.frames[-1][1].seq_to:
            return None
        out: list[OutFrame] = []
        for _, frame in reversed(self.frames):
            if frame.seq_to <= seq:
                break
            out.append(frame)
        out.reverse()
        # Frames from an older publisher do not say how many changes they carry: their
        # seq range bounds it.
        routed = sum(
            f.routed if f.routed is not None else f.seq_to - max(f.prev_seq, seq) for f in out
        )
        return None if routed > most else out


class ContextFollower:
    """Turns group messages of followed contexts into gap-free, duplicate-free frames."""

    def __init__(self, *, audience: str, fetch: Fetch = fetch_from_log):
        self.audience = audience
        self.fetch = fetch
        self.last: dict[str, int] = {}
        self.recent: dict[str, RecentFrames] = {}
        # The contexts whose recent frames are not empty: the periodic trim visits only
        # these (a process may follow 100,000 quiet company contexts).
        self.recent_held: set[str] = set()
        self.repairs = 0
        self.recent_answers = 0

    def follow(self, context: str, seq: int) -> None:
        """Start passing on the context's changes after `seq`."""
        self.last[context] = seq
        self.recent[context] = RecentFrames()

    def unfollow(self, context: str) -> None:
        self.last.pop(context, None)
        self.recent.pop(context, None)
        self.recent_held.discard(context)

    def recent_after(self, context: str, seq: int, *, most: int) -> list[OutFrame] | None:
        """Everything of `context` after `seq` that this follower passed on, from memory
        (see RecentFrames.after); an empty list when nothing came after `seq`."""
        recent = self.recent.get(context)
        if recent is None:
            return None
        frames = recent.after(seq, most=most)
        if frames is not None:
            self.recent_answers += 1
        return frames

    def recent_trim(self) -> None:
        """Forget what is older than REALTIME_RECENT_FRAMES_S in contexts gone quiet."""
        now = time.monotonic()
        for context in list(self.recent_held):
            recent = self.recent.get(context)
            if recent is not None:
                recent.trim(now)
            if recent is None or not recent.frames:
                self.recent_held.discard(context)

    def recent_bytes(self) -> int:
        """What the recent frames hold (read by the metrics scrape, from another thread:
        a context may be unfollowed meanwhile)."""
        held = [self.recent.get(context) for context in list(self.recent_held)]
        return sum(recent.size for recent in held if recent is not None)

    def _passed_on(self, context: str, frames: list[OutFrame]) -> list[OutFrame]:
        recent = self.recent.get(context)
        if recent is not None:
            now = time.monotonic()
            for frame in frames:
                recent.add(frame, now)
            if recent.frames:
                self.recent_held.add(context)
        return frames

    async def accept(self, message: dict[str, Any]) -> list[OutFrame]:
        """The encoded frames to pass on for one group message, in order, each with the
        seq its receiver's cursor moves to."""
        context = message["context"]
        last = self.last.get(context)
        if last is None or message["seq_to"] <= last:
            return []
        frames: list[OutFrame] = []
        if message["prev_seq"] > last:
            self.repairs += 1
            logger.info(
                "gap in %s (%s): have %s, frame follows %s; reading the log",
                context,
                self.audience,
                last,
                message["prev_seq"],
            )
            frames.extend(await self.repair(context, through=message["prev_seq"]))
            last = self.last.get(context, last)
            if message["seq_to"] <= last:
                return frames
        if message["prev_seq"] >= last or message["seq_from"] > last:
            frames.append(
                OutFrame(
                    message["prev_seq"],
                    message["seq_from"],
                    message["seq_to"],
                    message["frame"],
                    routed=message.get("routed"),
                )
            )
        else:
            # Overlaps what the repair already delivered: pass on only the rest.
            body = _decode(message["frame"])
            rest = [item for item in body["changes"] if item["seq"] > last]
            text = batch_frame(context, last, message["seq_to"], rest)
            frames.append(
                OutFrame(last, last + 1, message["seq_to"], text, routed=message.get("routed"))
            )
        self.last[context] = message["seq_to"]
        self._passed_on(context, frames[-1:])
        return frames

    async def repair(self, context: str, *, through: int) -> list[OutFrame]:
        """Read the context's changes from the log until at least `through`."""
        frames: list[OutFrame] = []
        limit = settings.PUBLISHER_FRAME_MAX_ITEMS
        while self.last.get(context, through) < through:
            after = self.last[context]
            catch_up = await self.fetch(
                context=context, after=after, audience=self.audience, limit=limit, through=through
            )
            if catch_up.resets:
                reset = catch_up.resets[0]
                text = reset_frame(context, reset.reason, catch_up.epoch, catch_up.head_seq)
                head = catch_up.head_seq
                frames.append(OutFrame(head, head, head, text, reset=True))
                self.last[context] = catch_up.head_seq
                break
            cursor = catch_up.cursors.get(context, after)
            if cursor <= after:
                # The log is not there yet (a replica behind): deliver what we have.
                break
            text = batch_frame(context, after, cursor, catch_up.items)
            frames.append(OutFrame(after, after + 1, cursor, text, routed=len(catch_up.items)))
            self.last[context] = cursor
        return self._passed_on(context, frames)


def _decode(frame: str) -> dict[str, Any]:
    return json.loads(frame, parse_float=Decimal)


def batch_after(text: str, cursor: int, context: str) -> str:
    """Re-encode a batch keeping only the items after `cursor` (a rare overlap)."""
    body = json.loads(text, parse_float=Decimal)
    items = [item for item in body["changes"] if item["seq"] > cursor]
    return batch_frame(context, cursor, body["seq_to"], items)
