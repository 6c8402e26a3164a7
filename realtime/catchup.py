"""Catch-up, the part of LiveSession (realtime/session.py) that brings a context from a
cursor to the live stream: from the hub's recent frames when they reach back far enough,
else from the change log, then the frames buffered meanwhile (`switching`) without a gap
or a duplicate. A mixin: it works on the session's own cursors and buffers."""

from __future__ import annotations

import functools

from channels.db import database_sync_to_async
from django.conf import settings

from changes.selectors import (
    RESET_CURSOR_INVALID,
    RESET_EPOCH_CHANGED,
    changes_since,
)
from realtime import protocol
from realtime.follower import OutFrame, batch_after, batch_frame
from realtime.outbox import Send


class CatchUp:
    """Mixin of LiveSession: its catch-ups."""

    async def _start(self, contexts: list[str], *, since, epoch, state) -> None:
        """Set each context's starting cursor (catching up if asked), then flush."""
        for context in contexts:
            start = since.get(context) if isinstance(since, dict) else since
            if epoch is not None and epoch != state.epoch:
                await self._reset(context, RESET_EPOCH_CHANGED, state)
            elif start is None:
                if context not in self.cursors:
                    self.cursors[context] = state.head_seq
            elif start > state.head_seq or start < 0:
                await self._reset(context, RESET_CURSOR_INVALID, state)
            else:
                self.cursors[context] = start
                if not self.paused:
                    await self._catch_up(
                        context, start, through=None, paced=True, fresh_through=state.head_seq
                    )
            await self._flush(context)

    async def _reset(self, context: str, reason: str, state) -> None:
        await self.send(
            protocol.reset(context=context, reason=reason, epoch=state.epoch, seq=state.head_seq)
        )
        self.cursors[context] = state.head_seq

    async def _catch_up(
        self,
        context: str,
        after: int,
        *,
        through: int | None,
        paced: bool = False,
        merged: bool = False,
        fresh_through: int = 0,
    ) -> None:
        """Send the context's logged changes after `after` (up to the head, or `through`):
        from the hub's memory when its recent frames reach back that far (what is newer
        than them is still on its way and arrives live), else from the log. `paced`: as
        fast as the client reads (a subscription's catch-up, on the connection's own
        task; never from the hub's delivery). `merged`: the frames from memory go as one
        batch (split at max_batch), as the log's page would, for a paced category.
        `fresh_through`: a seq known to be published (the head the client was told): the
        log is read from a database that has it, or the catch-up would stop short of it
        (a read replica behind) with nothing to bring the rest until the next change."""
        send = functools.partial(self.send, paced=paced)
        recent = self.hub.follower(self.audience).recent_after(
            context, after, most=settings.CATCHUP_MAX_CHANGES
        )
        if recent is not None:
            if merged and recent:
                recent = self._merged(context, recent)
            await self._send_recent(context, after, recent, send)
            return
        limit = settings.PUBLISHER_FRAME_MAX_ITEMS
        cursor = after
        while not self.closed:
            # `through` is published too (a frame follows it).
            page = await database_sync_to_async(changes_since)(
                cursors={context: cursor},
                audience=self.audience,
                limit=limit,
                fresh_through=max(fresh_through, through or 0),
            )
            if page.resets:
                await send(
                    protocol.reset(
                        context=context,
                        reason=page.resets[0].reason,
                        epoch=page.epoch,
                        seq=page.head_seq,
                    )
                )
                self.cursors[context] = page.head_seq
                return
            next_cursor = page.cursors.get(context, cursor)
            if next_cursor > cursor:
                await send(batch_frame(context, cursor, next_cursor, page.items))
                self.frames_sent += 1
                cursor = next_cursor
                self.cursors[context] = cursor
            if not page.has_more or (through is not None and cursor >= through):
                return

    async def _send_recent(
        self, context: str, after: int, frames: list[OutFrame], send: Send
    ) -> None:
        cursor = after
        for frame in frames:
            if self.closed or context not in self.cursors:
                return
            if frame.seq_to <= cursor:
                continue
            # PROTOCOL.md: a catch-up batch follows the client's cursor (`prev_seq` = it).
            # Frames from memory chain on from each other, so only the first one, whose
            # own prev_seq is usually older, is re-encoded.
            if frame.prev_seq == cursor and frame.seq_from > cursor:
                text = frame.text
            else:
                text = batch_after(frame.text, cursor, context)
            await send(text)
            self.frames_sent += 1
            cursor = self.cursors[context] = frame.seq_to

    async def _flush(self, context: str) -> None:
        """Send what arrived live during the catch-up, minus what it already covered."""
        while self.switching.get(context):
            frame = self.switching[context].pop(0)
            if not self.paused:
                await self._send_frame(context, frame)
        self._switching_end(context)

    def _switching_end(self, context: str) -> None:
        self.switching.pop(context, None)
        self.switching_bytes = sum(
            len(frame.text) for frames in self.switching.values() for frame in frames
        )
