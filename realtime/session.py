"""One client's live subscriptions, whatever the transport (WebSocket or SSE).

Subscribing to a context, in this order: register with the hub (live frames for it are
buffered from now on), send `subscribed`, send the catch-up from the client's cursor out
of the change log, then flush the buffer, dropping what the catch-up already covered.
Every context's cursor is the `seq_to` of the last frame sent for it; a frame at or below
the cursor is never sent, and one that would leave a gap is preceded by the missing part
read from the log: no gap and no duplicate across the switch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from adminpanel.services import staff_subscriptions_record
from changes.contexts import SYSTEM
from changes.models import AUDIENCE_STAFF
from changes.selectors import (
    RESET_CURSOR_INVALID,
    RESET_EPOCH_CHANGED,
    change_log_state,
    changes_since,
)
from realtime import protocol
from realtime.access import audience_of, contexts_authorize
from realtime.control import client_key
from realtime.follower import OutFrame, batch_frame
from realtime.hub import Hub, get_hub
from realtime.services import connection_close, connection_contexts_set, connection_open

logger = logging.getLogger(__name__)

Send = Callable[[str], Awaitable[None]]


class TooManySubscriptions(Exception):
    """A subscribe that would exceed REALTIME_MAX_SUBSCRIPTIONS."""


class LiveSession:
    """Cursors, buffers and pause state of one connection."""

    def __init__(
        self,
        *,
        user: Any,
        send: Send,
        transport: str,
        client_address: str | None = None,
        user_agent: str = "",
        hub: Hub | None = None,
        session_key: str | None = None,
    ):
        self.id = uuid.uuid4().hex
        self.user = user
        # Who this connection belongs to across reconnects (realtime/control.py).
        self.client_key = client_key(user, session_key)
        self.audience = audience_of(user)
        self.send = send
        self.transport = transport
        self.client_address = client_address
        self.user_agent = user_agent
        self.hub = hub or get_hub()
        self.tracked = False
        self.cursors: dict[str, int] = {}
        self.switching: dict[str, list[OutFrame]] = {}
        self.paused = False
        self.policy = protocol.default_policy()
        self.frames_sent = 0
        # Rate policy: live frames closer together than min_interval_ms are held back and
        # merged into one batch (coalesced, never dropped).
        self.last_sent_at: dict[str, float] = {}
        self.held: dict[str, list[OutFrame]] = {}
        self.flush_tasks: dict[str, asyncio.Task] = {}

    # -- the hub side ---------------------------------------------------------------------

    async def hub_frame(self, context: str, frame: OutFrame) -> None:
        """A live frame from the hub: buffered during a catch-up, else sent in order."""
        if context in self.switching:
            self.switching[context].append(frame)
            return
        if context not in self.cursors or self.paused:
            # Paused: the cursor stays put; resume catches up from it.
            return
        interval = self.policy["min_interval_ms"] / 1000
        if interval > 0 and not frame.reset:
            now = asyncio.get_running_loop().time()
            wait = self.last_sent_at.get(context, -interval) + interval - now
            if wait > 0 or context in self.held:
                self.held.setdefault(context, []).append(frame)
                if context not in self.flush_tasks:
                    self.flush_tasks[context] = asyncio.create_task(
                        self._send_held(context, max(wait, 0))
                    )
                return
        await self._send_frame(context, frame)

    async def _send_held(self, context: str, delay: float) -> None:
        """After the policy's interval, send everything held for a context as one batch.

        The context stays in `held` until the send is done, so frames arriving meanwhile
        queue behind it (and go out one interval later) instead of overtaking it.
        """
        interval = self.policy["min_interval_ms"] / 1000
        try:
            await asyncio.sleep(delay)
            while self.held.get(context):
                frames, self.held[context] = self.held[context], []
                if context in self.cursors and not self.paused:
                    await self._send_frame(context, self._merged(context, frames))
                if self.held.get(context):
                    await asyncio.sleep(interval)
        finally:
            self.held.pop(context, None)
            self.flush_tasks.pop(context, None)

    def _merged(self, context: str, frames: list[OutFrame]) -> OutFrame:
        """Several live frames of one context as one batch after the cursor."""
        cursor = self.cursors[context]
        items = []
        for frame in frames:
            body = json.loads(frame.text, parse_float=Decimal)
            items.extend(item for item in body["changes"] if item["seq"] > cursor)
        seq_to = max(frame.seq_to for frame in frames)
        return OutFrame(
            prev_seq=min(frame.prev_seq for frame in frames),
            seq_from=min(frame.seq_from for frame in frames),
            seq_to=seq_to,
            text=batch_frame(context, cursor, seq_to, items),
        )

    async def _send_frame(self, context: str, frame: OutFrame) -> None:
        cursor = self.cursors[context]
        if frame.seq_to <= cursor and not frame.reset:
            return
        if frame.prev_seq > cursor and not frame.reset:
            # Something between the cursor and this frame never reached us: read it.
            await self._catch_up(context, cursor, through=frame.prev_seq)
            cursor = self.cursors[context]
            if frame.seq_to <= cursor:
                return
        if frame.seq_from <= cursor and not frame.reset:
            text = _after(frame.text, cursor, context)
        else:
            text = frame.text
        await self.send(text)
        self.frames_sent += 1
        self.cursors[context] = frame.seq_to
        self.last_sent_at[context] = asyncio.get_running_loop().time()

    # -- client requests ------------------------------------------------------------------

    async def open(self) -> None:
        """Record the connection (active_connections) and send `hello`."""
        await database_sync_to_async(connection_open)(
            session=self.id,
            transport=self.transport,
            user=self.user,
            audience=self.audience,
            client_address=self.client_address,
            user_agent=self.user_agent,
        )
        self.tracked = True
        self.hub.sessions.add(self)
        await self.hello()

    async def hello(self) -> None:
        state = await database_sync_to_async(change_log_state)()
        await self.send(
            protocol.hello(
                session=self.id,
                epoch=state.epoch,
                seq=state.head_seq,
                policy=self.policy,
                transport=self.transport,
            )
        )

    async def subscribe(
        self,
        contexts: list,
        *,
        since: int | dict | None = None,
        epoch: str | None = None,
        ref: Any = None,
    ) -> None:
        """Join the permitted contexts, reply `subscribed`, catch up, go live."""
        decisions = await database_sync_to_async(contexts_authorize)(
            user=self.user, contexts=contexts
        )
        accepted = [d.context for d in decisions if d.context and d.context != SYSTEM]
        accepted = list(dict.fromkeys(accepted))
        rejected = [d.rejection() for d in decisions if d.code]
        new = [c for c in accepted if c not in self.cursors]
        if len(self.cursors) + len(new) > settings.REALTIME_MAX_SUBSCRIPTIONS:
            raise TooManySubscriptions(
                f"At most {settings.REALTIME_MAX_SUBSCRIPTIONS} contexts per connection."
            )
        if new and self.audience == AUDIENCE_STAFF:
            # Staff-only subscriptions (`monitor`, hidden companies) go to the audit log.
            await database_sync_to_async(staff_subscriptions_record)(
                user=self.user, contexts=new, session=self.id, transport=self.transport
            )
        for context in accepted:
            self.switching.setdefault(context, [])
            if context in new:
                await self.hub.join(self, context, self.audience)
        state = await database_sync_to_async(change_log_state)()
        await self.send(
            protocol.subscribed(
                contexts=self.active_contexts(new),
                rejected=rejected,
                seq=state.head_seq,
                paused=self.paused,
                ref=ref,
            )
        )
        await self._start(accepted, since=since, epoch=epoch, state=state)
        if new:
            await self._track_contexts()

    async def resume(self, *, since: int | dict | None = None, ref: Any = None) -> None:
        """Resume sending, catching up from `since` (or from each context's cursor)."""
        self.paused = False
        contexts = list(self.cursors)
        for context in contexts:
            self.switching.setdefault(context, [])
        state = await database_sync_to_async(change_log_state)()
        await self.send(
            protocol.subscribed(
                contexts=list(self.cursors), rejected=[], seq=state.head_seq, paused=False, ref=ref
            )
        )
        if since is None:
            since = dict(self.cursors)
        await self._start(contexts, since=since, epoch=None, state=state)

    async def pause(self, *, ref: Any = None) -> None:
        self.paused = True
        state = await database_sync_to_async(change_log_state)()
        await self.send(
            protocol.subscribed(
                contexts=list(self.cursors), rejected=[], seq=state.head_seq, paused=True, ref=ref
            )
        )

    async def unsubscribe(self, contexts: list, *, ref: Any = None) -> None:
        for requested in contexts:
            context = requested if isinstance(requested, str) else None
            if context in self.cursors:
                del self.cursors[context]
                self.switching.pop(context, None)
                await self.hub.leave(self, context, self.audience)
        await self._track_contexts()
        state = await database_sync_to_async(change_log_state)()
        await self.send(
            protocol.subscribed(
                contexts=list(self.cursors),
                rejected=[],
                seq=state.head_seq,
                paused=self.paused,
                ref=ref,
            )
        )

    async def close(self) -> None:
        for task in self.flush_tasks.values():
            task.cancel()
        await self.hub.leave_all(self)
        self.hub.sessions.discard(self)
        self.cursors.clear()
        self.switching.clear()
        if self.tracked:
            await database_sync_to_async(connection_close)(session=self.id)
            self.tracked = False

    async def _track_contexts(self) -> None:
        if self.tracked:
            await database_sync_to_async(connection_contexts_set)(
                session=self.id, contexts=list(self.cursors)
            )

    def active_contexts(self, new: list[str] | None = None) -> list[str]:
        return list(dict.fromkeys([*self.cursors, *(new or [])]))

    # -- catch-up -------------------------------------------------------------------------

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
                    await self._catch_up(context, start, through=None)
            await self._flush(context)

    async def _reset(self, context: str, reason: str, state) -> None:
        await self.send(
            protocol.reset(context=context, reason=reason, epoch=state.epoch, seq=state.head_seq)
        )
        self.cursors[context] = state.head_seq

    async def _catch_up(self, context: str, after: int, *, through: int | None) -> None:
        """Send the context's logged changes after `after` (up to the head, or `through`)."""
        limit = settings.PUBLISHER_FRAME_MAX_ITEMS
        cursor = after
        while True:
            page = await database_sync_to_async(changes_since)(
                cursors={context: cursor}, audience=self.audience, limit=limit
            )
            if page.resets:
                await self.send(
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
                await self.send(batch_frame(context, cursor, next_cursor, page.items))
                self.frames_sent += 1
                cursor = next_cursor
                self.cursors[context] = cursor
            if not page.has_more or (through is not None and cursor >= through):
                return

    async def _flush(self, context: str) -> None:
        """Send what arrived live during the catch-up, minus what it already covered."""
        while self.switching.get(context):
            frame = self.switching[context].pop(0)
            if not self.paused:
                await self._send_frame(context, frame)
        self.switching.pop(context, None)


def _after(text: str, cursor: int, context: str) -> str:
    """Re-encode a batch keeping only the items after `cursor` (a rare overlap)."""
    body = json.loads(text, parse_float=Decimal)
    items = [item for item in body["changes"] if item["seq"] > cursor]
    return batch_frame(context, cursor, body["seq_to"], items)
