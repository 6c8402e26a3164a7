"""The hub's housekeeping: the loops every server process runs beside its fan-out
(heartbeats of the WebSocket connections, the batched last_seen refresh, the periodic
check of the context heads, the event-loop lag probe) and the hand-over on SIGTERM. A
mixin of Hub (realtime/hub.py): the state it works on is the hub's own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading

from channels.db import database_sync_to_async
from django.conf import settings

from changes.selectors import change_log_state
from realtime.metrics import LOOP_LAG_PROBE_S, event_loop_lag
from realtime.services import connections_touch

logger = logging.getLogger(__name__)

# Heartbeats of every connection share one read of the head per this many seconds: at
# 5,000 connections a read each was 200 queries a second on the one database thread.
HEAD_CACHE_S = 1.0
# How often the heartbeat loop looks for connections due a heartbeat (their jitter is
# coarser than this).
HEARTBEAT_TICK_S = 0.5
# Between sending 4503 to every client and letting the server stop.
SHUTDOWN_GRACE_S = 0.5


class HubHousekeeping:
    """Mixin of Hub: its background loops and its shutdown."""

    async def head_seq(self) -> int:
        """The published head, read at most once per HEAD_CACHE_S for this process."""
        now = asyncio.get_running_loop().time()
        if self._head is None or now - self._head[0] > HEAD_CACHE_S:
            state = await database_sync_to_async(change_log_state)()
            self._head = (now, state.head_seq)
        return self._head[1]

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
