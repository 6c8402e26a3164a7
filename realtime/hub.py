"""The per-process fan-out hub.

One hub per server process joins the channel-layer group of every (context, audience)
its connections need, receives each published frame once, checks it against the log
(`ContextFollower`: a gap is repaired before anything is passed on) and hands the
already-encoded frame to each local subscriber in turn. Measured here, a consumer per
connection on the channel layer tops out at 4,000 to 6,000 deliveries/s per process; a
hub like this one reached 56,000 to 90,000 (DESIGN.md).

The hub leaves a group when its last local subscriber leaves, and every second compares
what it has with the published heads (one query), so a frame lost between Redis and the
hub is read from the log even if nothing else is published to that context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Protocol

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection

from changes.selectors import change_log_state
from realtime.broadcast import BATCH_MESSAGE_TYPE, SYSTEM_MESSAGE_TYPE
from realtime.control import (
    CONTROL_MESSAGE_TYPE,
    PROCESS_MESSAGE_TYPE,
    control_dispatch,
    process_dispatch,
)
from realtime.follower import ContextFollower, OutFrame
from realtime.groups import SYSTEM_GROUP, context_group
from realtime.metrics import LOOP_LAG_PROBE_S, event_loop_lag
from realtime.services import (
    connections_close,
    connections_of_stopped_processes_delete,
    connections_touch,
)

logger = logging.getLogger(__name__)

# After the channel layer fails (Redis away), wait this long before listening again.
RECEIVE_RETRY_S = 1.0
# Heartbeats of every connection share one read of the head per this many seconds: at
# 5,000 connections a read each was 200 queries a second on the one database thread.
HEAD_CACHE_S = 1.0
# How often the heartbeat loop looks for connections due a heartbeat (their jitter is
# coarser than this).
HEARTBEAT_TICK_S = 0.5
# Between sending 4503 to every client and letting the server stop.
SHUTDOWN_GRACE_S = 0.5
# Rows of ended connections are deleted together, this long after the first: a thousand
# clients dropped at once cost a few statements, not a thousand on the one database
# thread (measured: 1,200 one by one took 1.5 to 4.8 s under a reconnect storm).
ROW_RELEASE_BATCH_S = 0.05
# A failed delete (the database restarting) is tried again this many times, waiting 0.1,
# 0.2, ... 6.4 s: a restart of a few seconds loses no row.
ROW_RELEASE_RETRIES = 7


# Background work every server process runs beside its hub, registered by apps (the
# monitor's process figures, adminpanel/monitor.py): each is called with the hub once,
# when the hub starts, and runs as long as the process.
_process_tasks: list[Callable[[Hub], Awaitable[None]]] = []


def hub_task(factory: Callable[[Hub], Awaitable[None]]) -> Callable[[Hub], Awaitable[None]]:
    """Register a coroutine function to run beside every hub (decorator)."""
    if factory not in _process_tasks:
        _process_tasks.append(factory)
    return factory


class Subscriber(Protocol):
    """What a connection gives the hub: a way to take one encoded frame, and to end when
    it could not."""

    async def hub_frame(self, context: str, frame: OutFrame) -> None: ...

    async def end(self, reason: str) -> None: ...


def _context_heads(keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    if not keys:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT context, audience, last_seq FROM context_heads"
            " WHERE (context, audience) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            [[k[0] for k in keys], [k[1] for k in keys]],
        )
        return {(c, a): seq for c, a, seq in cursor.fetchall()}


class Hub:
    """Group memberships and delivery for every connection of this process."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.members: dict[tuple[str, str], set[Subscriber]] = {}
        self.followers: dict[str, ContextFollower] = {}
        self.task: asyncio.Task | None = None
        self.lock = asyncio.Lock()
        self.frames_received = 0
        self.deliveries = 0
        # Every live session of this process, for the batched last_seen refresh, and
        # every transport connection, to be told when the process stops.
        self.sessions: set = set()
        self.transports: set = set()
        # WebSocket connections, beaten by one loop (heartbeat_loop) instead of a task each.
        self.beating: set = set()
        self.heartbeat_task: asyncio.Task | None = None
        self.stopping = False
        self.started = False
        self._head: tuple[float, int] | None = None
        self.touch_task: asyncio.Task | None = None
        self.head_check_task: asyncio.Task | None = None
        self.loop_lag_task: asyncio.Task | None = None
        # Sessions whose active_connections rows wait to be deleted (release_row).
        self.rows_released: set[str] = set()
        self.release_task: asyncio.Task | None = None
        # Contexts the last head check found behind, with the head it saw.
        self._behind: dict[tuple[str, str], int] = {}
        self.process_tasks: list[asyncio.Task] = []

    async def head_seq(self) -> int:
        """The published head, read at most once per HEAD_CACHE_S for this process."""
        now = asyncio.get_running_loop().time()
        if self._head is None or now - self._head[0] > HEAD_CACHE_S:
            state = await database_sync_to_async(change_log_state)()
            self._head = (now, state.head_seq)
        return self._head[1]

    def follower(self, audience: str) -> ContextFollower:
        if audience not in self.followers:
            self.followers[audience] = ContextFollower(audience=audience)
        return self.followers[audience]

    async def start(self) -> None:
        if not self.started:
            self.started = True
            try:
                await database_sync_to_async(connections_of_stopped_processes_delete)()
            except Exception:
                logger.exception("deleting the rows of stopped server processes failed")
        if self.task is None or self.task.done():
            self.channel = await self.layer.new_channel("hub.")
            await self.layer.group_add(SYSTEM_GROUP, self.channel)
            self.task = asyncio.create_task(self._receive_loop(), name="realtime-hub")
        if self.heartbeat_task is None or self.heartbeat_task.done():
            self.heartbeat_task = asyncio.create_task(
                self._heartbeat_loop(), name="realtime-heartbeats"
            )
        if self.touch_task is None or self.touch_task.done():
            self.touch_task = asyncio.create_task(self._touch_loop(), name="realtime-touch")
            self._take_over_sigterm()
        if self.head_check_task is None or self.head_check_task.done():
            self.head_check_task = asyncio.create_task(
                self._head_check_loop(), name="realtime-head-check"
            )
        if self.loop_lag_task is None or self.loop_lag_task.done():
            self.loop_lag_task = asyncio.create_task(self._loop_lag_loop(), name="realtime-lag")
        if not self.process_tasks:
            self.process_tasks = [asyncio.create_task(task(self)) for task in _process_tasks]

    def _take_over_sigterm(self) -> None:
        """Under a server that installed its own SIGTERM handler (uvicorn, daphne's
        reactor), close every connection with 4503 first, then hand over to it: clients
        reconnect elsewhere at once instead of waiting for a timeout."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return  # nobody to hand over to (tests, shells): leave the default alone

        def on_sigterm() -> None:
            self.shutdown_task = asyncio.ensure_future(
                self.shutdown(lambda: previous(signal.SIGTERM, None))
            )

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)

    async def shutdown(self, then=None) -> None:
        """Close every connection of this process with 4503, then run `then`."""
        self.stopping = True
        for transport in list(self.transports):
            with contextlib.suppress(Exception):
                await transport.shutdown()
        # Give the close frames a moment to leave before the server stops.
        await asyncio.sleep(SHUTDOWN_GRACE_S)
        if then is not None:
            then()

    async def _heartbeat_loop(self) -> None:
        """Every HEARTBEAT_TICK_S, beat the connections whose heartbeat is due."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HEARTBEAT_TICK_S)
            now = loop.time()
            due = [c for c in list(self.beating) if c.heartbeat_at <= now]
            if not due:
                continue
            try:
                head = await self.head_seq()
            except Exception:
                logger.exception("heartbeats: cannot read the head")
                continue
            for consumer in due:
                try:
                    await consumer.heartbeat(head)
                except Exception:
                    # A heartbeat that fails ends its session; it is not tried again.
                    logger.exception("a heartbeat failed; ending the session")
                    await consumer.session.end("error")
            # The loop variable would hold the last connection beaten (its consumer,
            # session and server protocol) until the next beat, long after it closed on
            # a process that has gone idle.
            del consumer

    async def _loop_lag_loop(self) -> None:
        """Measure how late the event loop runs a timer (carbon_event_loop_lag_seconds)."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LOOP_LAG_PROBE_S
            await asyncio.sleep(LOOP_LAG_PROBE_S)
            event_loop_lag.observe(max(0.0, loop.time() - due))

    async def _touch_loop(self) -> None:
        """Refresh last_seen of this process's connections in one statement per period."""
        while True:
            await asyncio.sleep(settings.REALTIME_TOUCH_INTERVAL_S)
            sessions = [session.id for session in self.sessions if session.tracked]
            try:
                await database_sync_to_async(connections_touch)(sessions=sessions)
            except Exception:
                logger.exception("refreshing connections failed")

    def release_row(self, session_id: str) -> None:
        """Delete an ended session's active_connections row soon, with others."""
        self.rows_released.add(session_id)
        if self.release_task is None or self.release_task.done():
            self.release_task = asyncio.create_task(self._rows_release(), name="realtime-rows")

    async def _rows_release(self) -> None:
        await asyncio.sleep(ROW_RELEASE_BATCH_S)
        failures = 0
        while self.rows_released:
            batch, self.rows_released = self.rows_released, set()
            try:
                await database_sync_to_async(connections_close)(sessions=batch)
                failures = 0
            except Exception as exc:
                # The database restarted (a pooled connection died with it) or is away:
                # try again, later and later; past that, the sweep removes them.
                failures += 1
                if failures > ROW_RELEASE_RETRIES:
                    logger.exception("deleting %d connection rows failed", len(batch))
                    continue
                logger.warning("deleting %d connection rows failed: %r", len(batch), exc)
                self.rows_released |= batch
                await asyncio.sleep(ROW_RELEASE_BATCH_S * 2**failures)

    async def _head_check_loop(self) -> None:
        """Every REALTIME_HEAD_CHECK_S, one query for the heads of every context this hub
        follows: a frame lost between Redis and the hub is repaired within that, even
        when nothing more is published to its context."""
        while True:
            await asyncio.sleep(settings.REALTIME_HEAD_CHECK_S)
            for follower in self.followers.values():
                follower.recent_trim()
            if not self.members:
                continue
            try:
                await self.check_heads(confirmed=True)
            except Exception:
                logger.exception("checking the context heads failed")

    async def join(self, subscriber: Subscriber, context: str, audience: str) -> int:
        """Subscribe to a context's live frames; returns the seq the hub follows from
        (frames after it reach the subscriber)."""
        await self.start()
        key = (context, audience)
        async with self.lock:
            follower = self.follower(audience)
            if key not in self.members:
                self.members[key] = set()
                await self.layer.group_add(context_group(context, audience), self.channel)
                head = (await database_sync_to_async(change_log_state)()).head_seq
                follower.follow(context, head)
            self.members[key].add(subscriber)
            return follower.last[context]

    async def leave(self, subscriber: Subscriber, context: str, audience: str) -> None:
        key = (context, audience)
        async with self.lock:
            members = self.members.get(key)
            if members is None:
                return
            members.discard(subscriber)
            if not members:
                del self.members[key]
                self.follower(audience).unfollow(context)
                with contextlib.suppress(Exception):
                    await self.layer.group_discard(context_group(context, audience), self.channel)

    async def leave_all(self, subscriber: Subscriber) -> None:
        for context, audience in [key for key, subs in self.members.items() if subscriber in subs]:
            await self.leave(subscriber, context, audience)

    async def _receive_loop(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("hub lost the channel layer; rejoining")
                await asyncio.sleep(RECEIVE_RETRY_S)
                await self._rejoin()
                continue
            if message.get("type") == SYSTEM_MESSAGE_TYPE:
                await self._deliver_system(message["frame"])
                continue
            if message.get("type") == CONTROL_MESSAGE_TYPE:
                await control_dispatch(self.sessions, message)
                continue
            if message.get("type") == PROCESS_MESSAGE_TYPE:
                await process_dispatch(self, message)
                continue
            if message.get("type") != BATCH_MESSAGE_TYPE:
                continue
            self.frames_received += 1
            try:
                await self._dispatch(message)
            except Exception:
                logger.exception("hub failed to dispatch a frame of %s", message.get("context"))

    async def _dispatch(self, message: dict) -> None:
        key = (message["context"], message["audience"])
        if key not in self.members:
            return
        frames = await self.follower(message["audience"]).accept(message)
        await self._deliver(key, frames)

    async def _deliver(self, key: tuple[str, str], frames: list[OutFrame]) -> None:
        context = key[0]
        for frame in frames:
            # Sequential awaits beat asyncio.gather here (measured in DESIGN.md): no task
            # per delivery, and a slow connection only delays this loop by its own send.
            for subscriber in list(self.members.get(key, ())):
                try:
                    await subscriber.hub_frame(context, frame)
                    self.deliveries += 1
                except Exception:
                    # Its cursor can no longer be trusted: end it; the client resumes.
                    logger.exception("a subscriber of %s failed to take a frame", context)
                    await subscriber.end("error")

    async def _deliver_system(self, frame: str) -> None:
        """Announcements and maintenance go to every session, paused or not."""
        for session in list(self.sessions):
            await session.send(frame)  # a failed send ends its session there
            self.deliveries += 1

    async def _rejoin(self) -> None:
        """After a channel-layer failure: new channel, every group again, gaps repaired."""
        async with self.lock:
            self.channel = await self.layer.new_channel("hub.")
            await self.layer.group_add(SYSTEM_GROUP, self.channel)
            for context, audience in list(self.members):
                await self.layer.group_add(context_group(context, audience), self.channel)
        await self.check_heads()

    async def check_heads(self, *, confirmed: bool = False) -> None:
        """Compare what the hub has with the published heads; read any gap from the log.

        With `confirmed`, a context is repaired only when the previous check already saw
        it behind: a frame still on its way (tens of milliseconds from commit to hub) is
        not read twice, and a lost one is read one check later."""
        keys = list(self.members)
        heads = await database_sync_to_async(_context_heads)(keys)
        behind: dict[tuple[str, str], int] = {}
        for key, head in heads.items():
            context, audience = key
            follower = self.follower(audience)
            last = follower.last.get(context)
            if last is None or head <= last:
                continue
            seen = self._behind.get(key)
            if confirmed and (seen is None or seen <= last):
                behind[key] = head  # maybe on its way: look again next time
                continue
            frames = await follower.repair(context, through=head)
            await self._deliver(key, frames)
        self._behind = behind


_hubs: dict[asyncio.AbstractEventLoop, Hub] = {}


def get_hub() -> Hub:
    """The hub of the running event loop (one per server process)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub


def running_hubs() -> list[Hub]:
    """The hubs of this process (one per event loop that has served a connection)."""
    return list(_hubs.values())
