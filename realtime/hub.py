"""The per-process fan-out hub.

One hub per server process joins the channel-layer group of every (context, audience)
its connections need, receives each published frame once, checks it against the log
(`ContextFollower`: a gap is repaired before anything is passed on) and hands the
already-encoded frame to each local subscriber in turn. Measured here, a consumer per
connection on the channel layer tops out at 4,000 to 6,000 deliveries/s per process; a
hub like this one reached 56,000 to 90,000 (DESIGN.md).

The hub leaves a group when its last local subscriber leaves, and every second compares
what it has with the published heads (one query), so a frame lost between Redis and the
hub is read from the log even if nothing else is published to that context. Those
loops, and the hand-over on SIGTERM, are realtime/hub_housekeeping.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
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
from realtime.hub_housekeeping import HubHousekeeping
from realtime.loop_local import LoopLocal
from realtime.services import connections_close, connections_of_stopped_processes_delete

logger = logging.getLogger(__name__)

# After the channel layer fails (Redis away), wait this long before listening again.
RECEIVE_RETRY_S = 1.0
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


class Hub(HubHousekeeping):
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


# A hub is kept as long as the process, loop and all: running_hubs lists every one made
# (for the /metrics collector, realtime/apps.py).
_hubs: LoopLocal[Hub] = LoopLocal(Hub, keep_loops=True)


def get_hub() -> Hub:
    """The hub of the running event loop (one per server process)."""
    return _hubs.get()


def running_hubs() -> list[Hub]:
    """The hubs of this process (one per event loop that has served a connection)."""
    return _hubs.values()
