"""A connection's way out: texts leave in order, the sender never waits on a client that
does not read, and what waits for one client is bounded.

The hub hands each frame to every connection of the process in turn. An ASGI send to a
client that stopped reading waits until it reads again (the server's transport is above
its high-water mark), and that wait would hold up every other connection's delivery.
So while a connection would block, its texts queue here and one task of its own writes
them out as the client reads; a connection that keeps up never has that task (a task per
connection was measured at several KB each, DESIGN.md). Once the unsent bytes (the
server's buffer plus this queue) pass REALTIME_MAX_PENDING_BYTES, the outbox drops its
queue, aborts the connection and calls `on_end("slow_client")`, which ends the session:
the client resumes from its cursors when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from realtime.sockets import ServerConnection

logger = logging.getLogger(__name__)

Send = Callable[[str], Awaitable[None]]


class Outbox:
    """Ordered, non-blocking, bounded sends of one connection."""

    __slots__ = ("_send", "connection", "ended", "limit", "on_end", "queue", "queued", "writer")

    def __init__(
        self,
        send: Send,
        *,
        connection: ServerConnection | None,
        limit: int,
        on_end: Callable[[str], Awaitable[None]],
    ) -> None:
        self._send = send
        self.connection = connection
        self.limit = limit
        self.on_end = on_end
        self.queue: deque[str] | None = None
        self.queued = 0
        self.writer: asyncio.Task | None = None
        self.ended = False

    def unsent_bytes(self) -> int:
        buffered = self.connection.unsent_bytes() if self.connection is not None else 0
        return buffered + self.queued

    async def put(self, text: str) -> None:
        """Send `text` after everything put before it. Raises what the server's send
        raises when the text goes out at once (the client is gone)."""
        if self.queue is None:
            if self.connection is None or not self.connection.would_block():
                await self._send(text)
                return
            self.queue = deque()
        self.queue.append(text)
        self.queued += len(text)
        if self.unsent_bytes() > self.limit:
            await self.overflow()
            return
        if self.writer is None:
            self.writer = asyncio.create_task(self._write_out(), name="outbox-writer")

    async def put_paced(self, text: str, *, patience: float) -> None:
        """`put`, once the client has taken what waits for it.

        For catch-ups: a client back after a long absence may be owed more than
        REALTIME_MAX_PENDING_BYTES, and put at once it would be cut off as too slow on
        every return, never catching up on a slow link. Paced, a catch-up goes out as fast
        as the client reads. Only the connection's own task may wait here (never the
        hub, which serves every connection). A client that takes nothing for `patience`
        seconds is too slow all the same."""
        if self.connection is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + patience
            while not self.ended and (self.queue is not None or self.connection.would_block()):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    await self.overflow()
                    return
                if self.writer is not None:
                    await asyncio.wait({self.writer}, timeout=remaining)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.connection.writable_wait(), remaining)
            if self.ended:
                return
        await self.put(text)

    async def overflow(self) -> None:
        """The client is too slow: drop what waits, close it (4413) and end its session."""
        self.drop()
        if self.connection is not None:
            self.connection.abort_slow()
        await self.on_end("slow_client")

    async def _write_out(self) -> None:
        try:
            while self.queue:
                text = self.queue.popleft()
                self.queued -= len(text)
                await self._send(text)
        except Exception as exc:
            logger.debug("an outbox stopped writing: %r", exc)
            self.drop()
            await self.on_end("send_failed")
        finally:
            self.writer = None
            if not self.queue:
                self.queue = None

    def drop(self) -> None:
        """Forget what waits (the session is ending)."""
        self.ended = True
        self.queue = None
        self.queued = 0
        if self.writer is not None and self.writer is not asyncio.current_task():
            self.writer.cancel()
        self.writer = None
