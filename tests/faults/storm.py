"""Storm clients for the fault tests: WebSocket and SSE clients in one process that
follow their contexts, drop every connection without a close (TCP reset) and resume
from their cursors, all at once.

    python -m tests.faults.storm --ws ws://127.0.0.1:PORT/ws/dashboard/updates \\
        --http http://127.0.0.1:PORT --plan plan.json

`--plan` is a JSON list, one entry per client: `{"transport": "websocket"|"sse",
"context": "company:<uuid>"}`. The process prints `READY` once every client follows its
context, then obeys one command per line on stdin, answering each with one line:

- `storm`: reset every connection; every other client comes back asking for everything
  since its start and resets again at once (the server is mid catch-up); then every
  client reconnects from its cursor (WebSocket: `since`; SSE: `Last-Event-ID`)
  -> `STORMED {"seconds": ...}`
- `drain {"<context>": <head>, ...}`: wait until every client's cursor reached its
  context's head -> `DRAINED {"late": [...]}`
- `close`: close every connection (normally, or by reset with `close reset`) and print
  `CLOSED {...}`: per client its context, starting cursor, final cursor, the items it
  received (seq, entity, id), and the gaps and duplicates it saw.

Every wait is bounded (`--timeout` for the whole process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import socket
import struct
import sys
import time

import httpx
from websockets.asyncio.client import connect

from tests.sse_events import sse_events

LINGER_RESET = struct.pack("ii", 1, 0)


def reset_socket(sock: socket.socket | None) -> None:
    """Make the next close of `sock` a TCP reset (no FIN, no close frame)."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)


class Client:
    def __init__(self, index: int, transport: str, context: str):
        self.index = index
        self.transport = transport
        self.context = context
        self.start: int | None = None
        self.cursor: int | None = None
        self.items: list[list] = []
        self.gaps = 0
        self.duplicates = 0
        self.resets: list[dict] = []
        self.connections = 0
        self.subscribed = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.handle = None  # the websocket, or the SSE response
        self.event_id: str | None = None

    def on_message(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "subscribed":
            if self.cursor is None:
                self.start = self.cursor = message["seq"]
            self.subscribed.set()
        elif kind == "reset":
            self.resets.append(message)
            self.cursor = message["seq"]
        elif kind == "batch" and message["context"] == self.context:
            if message["prev_seq"] > self.cursor:
                self.gaps += 1
            for item in message["changes"]:
                if item["seq"] <= self.cursor:
                    self.duplicates += 1
                self.items.append([item["seq"], item["entity"], item["id"]])
            self.cursor = max(self.cursor, message["seq_to"])

    async def run_websocket(self, url: str) -> None:
        async with connect(url, max_queue=None, open_timeout=60) as ws:
            self.handle = ws
            self.connections += 1
            since = {} if self.cursor is None else {"since": {self.context: self.cursor}}
            await ws.send(json.dumps({"type": "subscribe", "contexts": [self.context], **since}))
            async for raw in ws:
                self.on_message(json.loads(raw))

    async def run_sse(self, http: httpx.AsyncClient, base: str) -> None:
        headers = {"Last-Event-ID": self.event_id} if self.event_id else {}
        query = {"contexts": self.context}
        if self.cursor is not None and not self.event_id:
            query["since"] = str(self.cursor)
        async with http.stream(
            "GET", f"{base}/api/stream/dashboard", params=query, headers=headers
        ) as response:
            if response.status_code != 200:
                raise RuntimeError(f"SSE refused: {response.status_code}")
            self.handle = response
            self.connections += 1
            async for event in sse_events(response):
                self.on_message(event.json())
                if event.id:
                    self.event_id = event.id

    async def flap(self, ws_url: str, http: httpx.AsyncClient, base: str) -> None:
        """Come back asking for everything since the start, and vanish (TCP reset) right
        after asking: the server is writing the catch-up to a socket that is gone."""
        with contextlib.suppress(Exception):
            if self.transport == "websocket":
                ws = await connect(ws_url, open_timeout=60)
                subscribe = {"type": "subscribe", "contexts": [self.context]}
                await ws.send(json.dumps({**subscribe, "since": {self.context: self.start}}))
                reset_socket(ws.transport.get_extra_info("socket"))
                ws.transport.abort()
            else:
                query = {"contexts": self.context, "since": str(self.start)}
                async with http.stream("GET", f"{base}/api/stream/dashboard", params=query) as r:
                    stream = r.extensions.get("network_stream")
                    reset_socket(stream.get_extra_info("socket") if stream else None)

    def abort(self) -> None:
        """Drop the connection by TCP reset: no close frame, no FIN."""
        reset_socket(self.socket())
        if self.transport == "websocket" and self.handle is not None:
            self.handle.transport.abort()
        if self.task is not None:
            self.task.cancel()

    def socket(self) -> socket.socket | None:
        if self.handle is None:
            return None
        if self.transport == "websocket":
            return self.handle.transport.get_extra_info("socket")
        stream = self.handle.extensions.get("network_stream")
        return stream.get_extra_info("socket") if stream is not None else None


class Storm:
    def __init__(self, args: argparse.Namespace, plan: list[dict]):
        self.args = args
        self.clients = [Client(i, p["transport"], p["context"]) for i, p in enumerate(plan)]
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(60, read=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
        )

    def _start(self, client: Client) -> None:
        client.subscribed.clear()
        if client.transport == "websocket":
            coro = client.run_websocket(self.args.ws)
        else:
            coro = client.run_sse(self.http, self.args.http)
        client.task = asyncio.create_task(self._guarded(client, coro))

    async def _guarded(self, client: Client, coro) -> None:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await coro

    async def open_all(self, timeout: float) -> None:
        # In waves: a connect burst of a thousand would meet the listen backlog.
        for start in range(0, len(self.clients), 100):
            wave = self.clients[start : start + 100]
            for client in wave:
                self._start(client)
            await asyncio.wait_for(asyncio.gather(*(c.subscribed.wait() for c in wave)), timeout)

    async def storm(self, timeout: float) -> dict:
        started = time.monotonic()
        for client in self.clients:
            client.abort()
        await asyncio.gather(*(c.task for c in self.clients), return_exceptions=True)
        # Every other client flaps first (it comes back and vanishes mid-catch-up).
        flapping = self.clients[::2]
        for start in range(0, len(flapping), 100):
            wave = flapping[start : start + 100]
            await asyncio.wait_for(
                asyncio.gather(*(c.flap(self.args.ws, self.http, self.args.http) for c in wave)),
                timeout,
            )
        await self.open_all(timeout)
        return {"seconds": round(time.monotonic() - started, 2)}

    async def drain(self, heads: dict[str, int], timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            late = [c.index for c in self.clients if c.cursor < heads.get(c.context, 0)]
            if not late:
                return {"late": []}
            await asyncio.sleep(0.1)
        return {"late": late}

    async def close(self, reset: bool) -> dict:
        for client in self.clients:
            if reset:
                client.abort()
            elif client.transport == "websocket" and client.handle is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.handle.close(), 5)
            client.task.cancel()
        await asyncio.gather(*(c.task for c in self.clients), return_exceptions=True)
        await self.http.aclose()
        return {
            "clients": [
                {
                    "transport": c.transport,
                    "context": c.context,
                    "start": c.start,
                    "cursor": c.cursor,
                    "items": c.items,
                    "gaps": c.gaps,
                    "duplicates": c.duplicates,
                    "resets": c.resets,
                    "connections": c.connections,
                }
                for c in self.clients
            ]
        }


def emit(tag: str, body: dict | None = None) -> None:
    sys.stdout.write(f"{tag} {json.dumps(body or {})}\n")
    sys.stdout.flush()


async def main_async(args: argparse.Namespace) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(args.plan) as f:
        storm = Storm(args, json.load(f))
    await storm.open_all(args.step_timeout)
    emit("READY")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        command, _, rest = line.partition(" ")
        if command == "storm":
            emit("STORMED", await storm.storm(args.step_timeout))
        elif command == "drain":
            emit("DRAINED", await storm.drain(json.loads(rest), args.step_timeout))
        else:  # close, or the end of stdin
            emit("CLOSED", await storm.close(reset=rest == "reset"))
            return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ws", required=True)
    parser.add_argument("--http", required=True)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--step-timeout", type=float, default=60)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    asyncio.run(asyncio.wait_for(main_async(args), args.timeout))


if __name__ == "__main__":
    main()
