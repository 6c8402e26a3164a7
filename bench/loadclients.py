"""A client process holding many idle live connections, driven over its stdin.

    python -m bench.loadclients --transport ws --base http://127.0.0.1:PORT \
        --contexts company:...,overview --offset 0 --deadline 600

Commands, one per line on stdin; each is answered with one JSON line on stdout:

    open N   open N more connections (each reads `hello` and, after subscribing to one
             context, `subscribed`): {"open": total, "failed": k, "seconds": t}
    close    close them all and exit: {"closed": n}

Connection i follows contexts[(offset + i) % len(contexts)]. Every connection keeps
reading (heartbeats) so the server never sees a stalled client; nothing else is sent.
The process exits by itself at the deadline or when its stdin closes (the parent died).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx
import websockets

# Handshakes in flight at once: enough to keep the server busy, not a connect storm.
OPENING_CONCURRENCY = 32
OPEN_TIMEOUT_S = 60.0


def nofile_raise() -> int:
    """Raise this process's open-file limit to the hard limit (one socket per connection)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Connections:
    """The open connections of one transport, each with its reading task."""

    def __init__(self, transport: str, base: str, contexts: list[str], offset: int):
        self.transport = transport
        self.base = base.rstrip("/")
        self.contexts = contexts
        self.offset = offset
        self.tasks: list[asyncio.Task] = []
        self.sockets: list[Any] = []
        self.failed = 0
        self.errors: list[str] = []
        # No pool limit and no read timeout: a stream stays open as long as we hold it.
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(OPEN_TIMEOUT_S, read=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
        )

    def _context(self, index: int) -> str:
        return self.contexts[(self.offset + index) % len(self.contexts)]

    async def open(self, count: int) -> dict:
        started = time.perf_counter()
        gate = asyncio.Semaphore(OPENING_CONCURRENCY)
        first = len(self.tasks) + self.failed
        opener: Callable[[str], Awaitable[None]] = (
            self._open_ws if self.transport == "ws" else self._open_sse
        )

        async def one(index: int) -> None:
            async with gate:
                try:
                    await asyncio.wait_for(opener(self._context(index)), OPEN_TIMEOUT_S)
                except Exception as exc:  # counted and reported; the run goes on
                    self.failed += 1
                    if len(self.errors) < 5:
                        self.errors.append(f"{type(exc).__name__}: {exc}"[:200])

        await asyncio.gather(*(one(first + i) for i in range(count)))
        return {
            "open": len(self.tasks),
            "failed": self.failed,
            "errors": self.errors,
            "seconds": round(time.perf_counter() - started, 2),
        }

    async def _open_ws(self, context: str) -> None:
        url = self.base.replace("http://", "ws://") + "/ws/dashboard/updates"
        # No client pings: an idle dashboard; daphne's own pings are answered by the library.
        ws = await websockets.connect(url, ping_interval=None, close_timeout=2, max_queue=64)
        try:
            hello = json.loads(await ws.recv())
            if hello.get("type") != "hello":
                raise RuntimeError(f"first frame {hello.get('type')!r}")
            await ws.send(json.dumps({"type": "subscribe", "contexts": [context], "ref": 1}))
            while True:
                message = json.loads(await ws.recv())
                if message.get("type") == "subscribed":
                    break
                if message.get("type") == "error":
                    raise RuntimeError(f"subscribe refused: {message}")
        except BaseException:
            await ws.close()
            raise
        self.sockets.append(ws)
        self.tasks.append(asyncio.create_task(self._drain_ws(ws)))

    @staticmethod
    async def _drain_ws(ws: Any) -> None:
        with contextlib.suppress(Exception):
            async for _ in ws:
                pass

    async def _open_sse(self, context: str) -> None:
        url = f"{self.base}/api/stream/dashboard?contexts={quote(context, safe=':')}"
        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._stream_sse(url, ready))
        try:
            await ready
        except BaseException:
            task.cancel()
            raise
        self.tasks.append(task)

    async def _stream_sse(self, url: str, ready: asyncio.Future) -> None:
        try:
            async with self.http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}")
                event = ""
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "subscribed" and not ready.done():
                        ready.set_result(True)
            raise RuntimeError("the stream ended")
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cut"))
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def close(self) -> int:
        count = len(self.tasks)
        closing = [ws.close() for ws in self.sockets]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 30)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.http.aclose()
        self.tasks.clear()
        self.sockets.clear()
        return count


async def stdin_lines() -> AsyncIterator[str]:
    """The driving process's commands, one a line on stdin; an empty line at the end of
    input (the parent closed it or died), after which there are no more."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        yield line
        if not line:
            return


def answer(body: dict) -> None:
    """Answer the driving process: one JSON line on stdout."""
    sys.stdout.write(json.dumps(body) + "\n")
    sys.stdout.flush()


async def serve(args: argparse.Namespace) -> None:
    connections = Connections(args.transport, args.base, args.contexts.split(","), args.offset)
    try:
        async for line in stdin_lines():
            if not line or line == "close":
                answer({"closed": await connections.close()})
                return
            command, _, count = line.partition(" ")
            if command == "open":
                answer(await connections.open(int(count)))
            else:
                answer({"error": f"unknown command {line!r}"})
    finally:
        await connections.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transport", choices=["ws", "sse"], required=True)
    parser.add_argument("--base", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--contexts", required=True, help="comma-separated contexts")
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--deadline", type=float, default=900.0, help="exit after this long")
    args = parser.parse_args()
    nofile_raise()

    async def bounded() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(serve(args), args.deadline)

    asyncio.run(bounded())


if __name__ == "__main__":
    main()
