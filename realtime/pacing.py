"""Paced delivery, the part of LiveSession (realtime/session.py) that holds a context's
live frames back while its refresh policy asks for spacing or debounce, and sends them
as one merged batch when the rule allows (coalesced, never dropped). A mixin: the state
it works on (`held`, `held_since`, `held_overflow`, `flush_tasks`, `flush_wakeups`,
`last_sent_at`, `rules`) is the session's own, set up in its __init__."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from decimal import Decimal

from changes.items import items_coalesce
from preferences.selectors import context_category
from realtime.follower import OutFrame, batch_frame
from realtime.policy import FREE_RULE, ContextRule

# Live frames held back for one context (waiting for its interval) beyond which they are
# dropped and the batch is read from the change log instead: a 5-minute interval on a
# busy context must not grow a connection's memory without bound.
HELD_MAX_FRAMES = 200


class Pacing:
    """Mixin of LiveSession: its paced delivery."""

    def _rule(self, context: str) -> ContextRule:
        return self.rules.get(context_category(context), FREE_RULE)

    def _due(self, context: str, rule: ContextRule, first_held_at: float) -> float:
        """When a batch of `context` may go: one spacing after the last, and one debounce
        window after the first change it holds."""
        last = self.last_sent_at.get(context, -math.inf)
        return max(last + rule.spacing_s, first_held_at + rule.debounce_s)

    def _hold(self, context: str, frame: OutFrame, now: float) -> None:
        held = self.held.setdefault(context, [])
        self.held_since.setdefault(context, now)
        if len(held) >= HELD_MAX_FRAMES:
            # Too much to keep: forget it and read the batch from the log when it is due.
            held.clear()
            self.held_overflow[context] = True
        held.append(frame)
        if context not in self.flush_tasks:
            self.flush_tasks[context] = asyncio.create_task(self._send_held(context))

    async def _send_held(self, context: str) -> None:
        """When its rule allows, send everything held for a context as one batch.

        The context stays in `held` until the send is done, so frames arriving meanwhile
        queue behind it (and go out one spacing later) instead of overtaking it. A policy
        change wakes the wait (`flush_wakeups`) so the batch is re-timed to the new rule.
        """
        loop = asyncio.get_running_loop()
        try:
            while self.held.get(context):
                rule = self._rule(context)
                first = self.held_since.get(context, loop.time())
                delay = self._due(context, rule, first) - loop.time()
                if delay > 0 and rule.live:
                    wakeup = self.flush_wakeups[context] = asyncio.Event()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wakeup.wait(), delay)
                    continue
                frames, self.held[context] = self.held[context], []
                self.held_since.pop(context, None)
                overflow = self.held_overflow.pop(context, False)
                if context not in self.cursors or self.paused or not rule.live:
                    continue  # the cursor stays put; resume catches up from it
                if overflow:
                    # The held frames' newest seq is published: read a log that has it.
                    newest = max((frame.seq_to for frame in frames), default=0)
                    await self._catch_up(
                        context,
                        self.cursors[context],
                        through=None,
                        merged=True,
                        fresh_through=newest,
                    )
                    self.last_sent_at[context] = loop.time()
                    continue
                for merged in self._merged(context, frames):
                    await self._send_frame(context, merged)
        finally:
            self.held.pop(context, None)
            self.held_since.pop(context, None)
            self.held_overflow.pop(context, None)
            self.flush_tasks.pop(context, None)
            self.flush_wakeups.pop(context, None)

    def _merged(self, context: str, frames: list[OutFrame]) -> list[OutFrame]:
        """Several live frames of one context as one batch after the cursor (records
        changed several times coalesced), split into frames of at most max_batch items."""
        cursor = self.cursors[context]
        items = []
        for frame in frames:
            body = json.loads(frame.text, parse_float=Decimal)
            items.extend(item for item in body["changes"] if item["seq"] > cursor)
        items = items_coalesce(items)
        seq_to = max(frame.seq_to for frame in frames)
        size = max(1, self.policy["max_batch"])
        chunks = [items[i : i + size] for i in range(0, len(items), size)] or [[]]
        merged, prev_seq = [], cursor
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            chunk_to = seq_to if last else chunk[-1]["seq"]
            merged.append(
                OutFrame(
                    prev_seq=min(frame.prev_seq for frame in frames) if index == 0 else prev_seq,
                    seq_from=chunk[0]["seq"] if chunk else seq_to,
                    seq_to=chunk_to,
                    text=batch_frame(context, prev_seq, chunk_to, chunk),
                )
            )
            prev_seq = chunk_to
        return merged
