"""One client's live subscriptions, whatever the transport (WebSocket or SSE).

Subscribing to a context, in this order: register with the hub (live frames for it are
buffered from now on), send `subscribed`, send the catch-up from the client's cursor out
of the change log, then flush the buffer, dropping what the catch-up already covered.
Every context's cursor is the `seq_to` of the last frame sent for it; a frame at or below
the cursor is never sent, and one that would leave a gap is preceded by the missing part
read from the log: no gap and no duplicate across the switch.

Here is the session itself (admission, live frames from the hub, the way out and the
end); its mixins hold the rest: subscriptions and the refresh policy
(realtime/session_subscriptions.py), catch-ups (realtime/catchup.py), paced delivery
(realtime/pacing.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from changes.selectors import (
    LogState,
    change_log_state,
)
from common.identity import client_key
from emissions.access import audience_of
from preferences.selectors import ClientPolicy, client_policy_resolve, context_category
from realtime import protocol
from realtime.catchup import CatchUp
from realtime.follower import OutFrame, batch_after
from realtime.hub import Hub, get_hub
from realtime.metrics import session_ended_count
from realtime.outbox import Outbox
from realtime.pacing import Pacing
from realtime.policy import FREE_RULE, ContextRule
from realtime.services import (
    connection_close,
    connection_open,
    connections_at_address,
)
from realtime.session_subscriptions import Subscriptions
from realtime.sockets import ServerConnection

logger = logging.getLogger(__name__)

Send = Callable[[str], Awaitable[None]]
# Run once when a session ends, however it ends: apps register what they keep per
# session so it goes with it.
CloseHook = Callable[["LiveSession"], Awaitable[None]]
_close_hooks: list[CloseHook] = []


def close_hook(hook: CloseHook) -> CloseHook:
    """Register a coroutine run when any session ends (once, whatever the imports)."""
    if hook not in _close_hooks:
        _close_hooks.append(hook)
    return hook


class LiveSession(Subscriptions, Pacing, CatchUp):
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
        connection: Any = None,
        server_connection: ServerConnection | None = None,
    ):
        self.id = uuid.uuid4().hex
        self.user = user
        # Who this connection belongs to across reconnects (realtime/control.py).
        self.client_key = client_key(user, session_key)
        self.session_key = session_key
        self.audience = audience_of(user)
        # The transport's object (the consumer), taken out of the hub's sets on close,
        # and how the transport closes its socket when the session ends on the server's
        # side (set by the transport: `on_end(reason)`).
        self.connection = connection
        self.on_end: Callable[[str], Awaitable[None]] | None = None
        self.outbox = Outbox(
            send,
            connection=server_connection,
            limit=settings.REALTIME_MAX_PENDING_BYTES,
            on_end=self.end,
        )
        self.ending = False
        self.closed = False
        self.transport = transport
        self.client_address = client_address
        self.user_agent = user_agent
        self.hub = hub or get_hub()
        self.tracked = False
        self.cursors: dict[str, int] = {}
        self.switching: dict[str, list[OutFrame]] = {}
        # Bytes of the live frames waiting in `switching`: they count against
        # REALTIME_MAX_PENDING_BYTES like the outbox, while a paced catch-up waits on the
        # client.
        self.switching_bytes = 0
        self.paused = False
        self.policy = protocol.default_policy()
        self.frames_sent = 0
        # The client's effective refresh policy (realtime/policy.py), once resolved, and
        # its rule per data category: live frames of a context closer together than its
        # spacing, or within its debounce window, are held back and merged into one batch
        # (coalesced, never dropped); a manual category gets no live batches.
        self.client_policy: ClientPolicy | None = None
        self.rules: dict[str, ContextRule] = {}
        self.last_sent_at: dict[str, float] = {}
        self.held: dict[str, list[OutFrame]] = {}
        self.held_since: dict[str, float] = {}
        self.flush_tasks: dict[str, asyncio.Task] = {}
        self.flush_wakeups: dict[str, asyncio.Event] = {}
        # Contexts whose held frames overflowed HELD_MAX_FRAMES, to re-read from the log
        # (a dict: an empty one is a third of an empty set, on every connection).
        self.held_overflow: dict[str, bool] = {}
        # Set by the transport: ends the connection when its policy stops allowing it.
        self.on_transport_refused: Callable[[], Awaitable[None]] | None = None

    # -- the hub side ---------------------------------------------------------------------

    async def hub_frame(self, context: str, frame: OutFrame) -> None:
        """A live frame from the hub: buffered during a catch-up, else sent in order."""
        if context in self.switching:
            self.switching[context].append(frame)
            self.switching_bytes += len(frame.text)
            if self.switching_bytes + self.outbox.unsent_bytes() > self.outbox.limit:
                await self.outbox.overflow()
            return
        if context not in self.cursors or self.paused:
            # Paused: the cursor stays put; resume catches up from it.
            return
        rule = self.rules.get(context_category(context), FREE_RULE)
        if not rule.live:
            # Manual mode: a pause of this category; `resume` catches up from the cursor.
            return
        if rule.paced and not frame.reset:
            now = asyncio.get_running_loop().time()
            if context in self.held or self._due(context, rule, now) > now:
                self._hold(context, frame, now)
                return
        await self._send_frame(context, frame)

    async def _send_frame(self, context: str, frame: OutFrame) -> None:
        cursor = self.cursors[context]
        if frame.seq_to <= cursor and not frame.reset:
            return
        if frame.prev_seq > cursor and not frame.reset:
            # Something between the cursor and this frame never reached us: read it.
            await self._catch_up(context, cursor, through=frame.prev_seq)
            cursor = self.cursors.get(context)
            if cursor is None or frame.seq_to <= cursor:
                return  # ended or unsubscribed meanwhile, or the catch-up covered it
        if frame.seq_from <= cursor and not frame.reset:
            text = batch_after(frame.text, cursor, context)
        else:
            text = frame.text
        await self.send(text)
        self.frames_sent += 1
        self.cursors[context] = frame.seq_to
        self.last_sent_at[context] = asyncio.get_running_loop().time()

    # -- the way out, and the end ----------------------------------------------------------

    async def send(self, text: str, *, paced: bool = False) -> None:
        """Send one text to the client, after everything sent before it. A send that
        fails (the client is gone) ends the session at once; nothing is sent after.
        `paced`: once the client has taken what waits for it (a catch-up, from the
        connection's own task only: see Outbox.put_paced)."""
        if self.closed or self.ending:
            return
        try:
            if paced:
                await self.outbox.put_paced(text, patience=settings.REALTIME_UNACKED_TIMEOUT_S)
            else:
                await self.outbox.put(text)
        except Exception as exc:
            logger.debug("session %s: a send failed (%r); ending it", self.id, exc)
            await self.end("send_failed")

    async def end(self, reason: str) -> None:
        """End the session from the server's side (a failed send, a client too slow, an
        error in a handler, a heartbeat timeout): the transport closes its socket, then
        everything is released (`close`). Idempotent."""
        if self.ending or self.closed:
            return
        self.ending = True
        session_ended_count(reason)
        self.outbox.drop()
        if self.on_end is not None:
            try:
                await self.on_end(reason)
            except Exception:
                logger.exception("session %s: closing its transport failed", self.id)
        await self.close()

    async def close(self) -> None:
        """Release everything the session holds, once, whatever ended it: held and
        queued frames, hub memberships, the hub's sets, what apps keep for it (close
        hooks) and its active_connections row."""
        if self.closed:
            return
        self.closed = True
        self.outbox.drop()
        for task in list(self.flush_tasks.values()):
            task.cancel()
        hub = self.hub
        hub.sessions.discard(self)
        hub.beating.discard(self.connection)
        hub.transports.discard(self.connection)
        try:
            await hub.leave_all(self)
        except Exception:
            logger.exception("session %s: leaving the hub's groups failed", self.id)
        self.cursors.clear()
        self.switching.clear()
        self.switching_bytes = 0
        self.held.clear()
        for hook in _close_hooks:
            try:
                await hook(self)
            except Exception:
                logger.exception("a close hook failed for session %s", self.id)
        if self.tracked:
            self.tracked = False
            hub.release_row(self.id)
        # The transport and the session refer to each other: let go of the transport, so
        # both are freed when the connection is, not at the next full garbage collection
        # (which the tuned collector of a server process makes rare: realtime/server.py).
        self.connection = None
        self.on_end = None
        self.on_transport_refused = None
        self.outbox = _CLOSED_OUTBOX

    # -- client requests ------------------------------------------------------------------

    async def open(self) -> str | None:
        """`admit`, then `hello`. Returns why the connection was refused, or None."""
        admission = await self.admit()
        if admission.refused is None:
            await self.hello(admission.state)
        return admission.refused

    async def admit(self) -> Admission:
        """Admit the connection and record it, in one trip to the database thread (a
        WebSocket's set-up made three, a stream's five): the per-address cap
        (REALTIME_MAX_CONNECTIONS_PER_ADDRESS), the client's refresh policy (a policy that
        does not allow this transport refuses it; a paused preference starts it paused),
        its active_connections row and the log's state for `hello`. A refused connection
        records nothing; the transport tells the client why. Maintenance is the
        transport's to check first (from the process's cache, without a trip)."""
        admission = await database_sync_to_async(_admitted)(
            session=self.id,
            transport=self.transport,
            user=self.user,
            audience=self.audience,
            client_address=self.client_address,
            user_agent=self.user_agent,
            session_key=self.session_key,
        )
        if admission.policy is not None:
            self._policy_set(admission.policy)
            if admission.policy.preferences.paused:
                self.paused = True
        if admission.refused is not None:
            return admission
        if self.closed:
            # Ended while the row was being written: take it back, hold nothing.
            await database_sync_to_async(connection_close)(session=self.id)
            return Admission(refused=GONE)
        self.tracked = True
        return admission

    async def hello(self, state: LogState) -> None:
        """Send `hello`; from then on the session also takes what goes to every session
        (announcements, maintenance, control messages), never before it (an SSE stream
        has not even sent its headers between `admit` and `hello`)."""
        if self.closed:
            return
        self.hub.sessions.add(self)
        await self.send(
            protocol.hello(
                session=self.id,
                epoch=state.epoch,
                seq=state.head_seq,
                policy=self.policy,
                transport=self.transport,
            )
        )


# Why `admit` refused a connection.
OVER_ADDRESS_CAP = "over_address_cap"
TRANSPORT_REFUSED = "transport_not_allowed"
GONE = "gone"  # the connection ended while it was being admitted


@dataclass(frozen=True)
class Admission:
    """What `admit` found: why the connection is refused (None: admitted, and then the
    log's state is there for `hello`), and the client's policy."""

    refused: str | None = None
    policy: ClientPolicy | None = None
    state: LogState | None = None


def _admitted(*, session_key: str | None, **row) -> Admission:
    """LiveSession.admit's trip to the database thread."""
    cap = settings.REALTIME_MAX_CONNECTIONS_PER_ADDRESS
    if connections_at_address(address=row["client_address"]) >= cap:
        return Admission(refused=OVER_ADDRESS_CAP)
    policy = client_policy_resolve(user=row["user"], session_key=session_key)
    if not policy.transport_allowed(row["transport"]):
        return Admission(refused=TRANSPORT_REFUSED, policy=policy)
    connection_open(**row)
    return Admission(policy=policy, state=change_log_state())


async def _nowhere(*args) -> None:
    """The way out of a closed session (and its end): nothing."""


# What a closed session holds instead of its outbox: its own outbox refers back to it
# (`on_end`), a cycle that only a full garbage collection would free.
_CLOSED_OUTBOX = Outbox(_nowhere, connection=None, limit=0, on_end=_nowhere)
