"""Load generator over HTTP: K Server-Sent Events or long-poll clients in one process.

The HTTP sibling of bench/loadgen.py, with its command line and control protocol (READY,
then `drain`, `report`, `stop` on stdin; see there), run by bench/transports.py:

    python -m bench.loadgen_http --transport sse --url http://127.0.0.1:8000 \\
        --plan clients.json --database-url postgres://... --control

`--url` is the server's base URL. What is recorded and checked is bench/loadgen_clients.py's own
code, reused unchanged: its `Client.read` takes one protocol message at a time from
`client.ws.recv()`, so each client here gets an object with that one method, which speaks
HTTP underneath (httpx, one connection per client, as one browser tab each):

- `sse`: `GET /api/stream/dashboard?contexts=...`, one stream per client; `recv()` returns
  the `data:` of the next `batch`, `reset` or `error` event (the same JSON as on the
  WebSocket, prev_seq included, so gaps are checked as there). A stream that ends is
  reopened like EventSource does: after the server's `retry`, with the last `id:` as
  `Last-Event-ID`, which resumes every context at its cursor.
- `longpoll`: the loop docs/protocol.md tells a client to run: `GET
  /api/updates/latest/<cursor>?contexts=...&wait=25&epoch=...`, apply the answer, poll
  again from its `next`, at once. Each answer with changes becomes one `batch` per
  context covering (cursor, next], so the loss and coalescing check is the WebSocket
  one; an answer has no `prev_seq`, so there are no gaps to see. A `reset` answer
  becomes a `reset` per context. A 429 is obeyed (`Retry-After`) and counted.

Every client connects from a loopback address of its own (127.<100+block>.x.y): the
server counts long polls per address (300 a minute), as it would for clients on their
own machines, and the same counts for the SSE connection limit. A long-poll report adds,
for the window, the requests answered, how long they took from send to answer (the
wait: parked on the server, then read), and the 429s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from array import array
from collections import Counter, deque

import httpx
import orjson
import psycopg
from websockets.exceptions import ConnectionClosed

from bench import loadgen
from bench.loadgen_clients import Client, Stream
from bench.loadgen_group import LoadGen

TRANSPORTS = ("sse", "longpoll")
SSE_PATH = "/api/stream/dashboard"
POLL_PATH = "/api/updates/latest/"
USER_AGENT = "carbon-bench-loadgen-http"
# SSE: what the server sends as `retry:` (realtime/sse.py), and how often a client tries
# before it gives up on a stream that keeps ending (never, in a healthy run).
SSE_RETRY_S = 3.0
SSE_REOPENS = 3
# Long poll: the longest wait PROTOCOL.md allows, and the pause after a failed request.
POLL_WAIT_S = 25.0
POLL_ERROR_PAUSE_S = 1.0
WAIT_BUCKET_US = 1000
# Events whose data goes to Client.read; hello, subscribed and heartbeats are skipped.
DELIVERED_EVENTS = frozenset((b"batch", b"reset", b"error"))
ERROR_MESSAGE = b'{"type":"error"}'


def source_address(block: int, index: int) -> str:
    """This client's own loopback address (block: the load generator's number)."""
    return f"127.{100 + block}.{index // 250}.{index % 250 + 1}"


def http_client(address: str, timeout: httpx.Timeout) -> httpx.AsyncClient:
    # verify=False: plain HTTP on loopback, and no certificate store loaded per client.
    transport = httpx.AsyncHTTPTransport(local_address=address, verify=False, retries=0)
    return httpx.AsyncClient(
        transport=transport, timeout=timeout, trust_env=False, headers={"user-agent": USER_AGENT}
    )


def retry_after_s(response: httpx.Response, default: float) -> float:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else default


# -- Server-Sent Events ----------------------------------------------------------------------


class StreamEnded(Exception):
    """The server ended the response body."""


def event_parse(block: bytes) -> tuple[bytes, bytes | None, bytes]:
    """(event name, id or None, data) of one event block (the lines before a blank one)."""
    name, event_id, data = b"message", None, []
    for line in block.split(b"\n"):
        field, _, value = line.rstrip(b"\r").partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"event":
            name = value
        elif field == b"data":
            data.append(value)
        elif field == b"id":
            event_id = value
    return name, event_id, b"\n".join(data)


class EventReader:
    """The events of one `text/event-stream` response, in order."""

    def __init__(self, response: httpx.Response):
        self.response = response
        self.chunks = response.aiter_raw()
        self.buffer = b""

    async def next(self) -> tuple[bytes, bytes | None, bytes]:
        while True:
            end = self.buffer.find(b"\n\n")
            if end >= 0:
                block, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
                name, event_id, data = event_parse(block)
                if data:  # a `retry:` or comment block carries none
                    return name, event_id, data
                continue
            chunk = await anext(self.chunks, None)
            if chunk is None:
                raise StreamEnded
            self.buffer += chunk


class SseSocket:
    """One client's event stream, read like a WebSocket by loadgen_clients.Client.read."""

    def __init__(self, http: httpx.AsyncClient, url: str, contexts: list[str]):
        self.http = http
        self.url = url
        self.contexts = contexts
        self.reader: EventReader | None = None
        self.last_id: str | None = None
        self.reopens = 0

    async def open(self) -> dict:
        """Start the stream; returns its `subscribed` message."""
        headers = {"accept": "text/event-stream"}
        if self.last_id is not None:
            headers["last-event-id"] = self.last_id
        request = self.http.build_request(
            "GET", self.url, params={"contexts": ",".join(self.contexts)}, headers=headers
        )
        response = await self.http.send(request, stream=True)
        if response.status_code != 200:
            await response.aclose()
            raise RuntimeError(f"SSE answered {response.status_code}")
        self.reader = EventReader(response)
        while True:
            name, _, data = await self.reader.next()
            if name == b"subscribed":
                return orjson.loads(data)

    async def recv(self, decode: bool = False) -> bytes:
        while True:
            try:
                name, event_id, data = await self.reader.next()
            except (StreamEnded, httpx.TransportError):
                await self.reopen()
                continue
            if event_id is not None:
                self.last_id = event_id.decode()
            if name in DELIVERED_EVENTS:
                return data

    async def reopen(self) -> None:
        """As EventSource: wait `retry`, resume from the last id; ConnectionClosed after
        SSE_REOPENS tries in a row."""
        await self.reader.response.aclose()
        for _ in range(SSE_REOPENS):
            self.reopens += 1
            await asyncio.sleep(SSE_RETRY_S)
            with contextlib.suppress(httpx.TransportError, RuntimeError, StreamEnded):
                await self.open()
                return
        raise ConnectionClosed(None, None)

    async def close(self) -> None:
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await self.reader.response.aclose()
        await self.http.aclose()


# -- long polling -----------------------------------------------------------------------------


class PollStats:
    """The long polls of every client of this process."""

    def __init__(self) -> None:
        self.answered_at = array("q")  # time.time_ns() of each answer
        self.took_us = array("q")  # send to answer read
        self.throttled = 0  # 429s
        self.failed = 0  # other errors, transport errors included

    def window(self, from_ns: int, to_ns: int) -> dict:
        """Figures of the requests answered in [from_ns, to_ns]; forgets those up to to_ns."""
        hist: Counter[int] = Counter()
        keep_at, keep_us = array("q"), array("q")
        for at, us in zip(self.answered_at, self.took_us, strict=True):
            if at > to_ns:
                keep_at.append(at)
                keep_us.append(us)
            elif at >= from_ns:
                hist[us // WAIT_BUCKET_US] += 1
        self.answered_at, self.took_us = keep_at, keep_us
        out = {
            "requests": sum(hist.values()),
            "wait_bucket_us": WAIT_BUCKET_US,
            "wait_hist": {str(k): v for k, v in sorted(hist.items())},
            "throttled": self.throttled,
            "failed": self.failed,
        }
        self.throttled = self.failed = 0
        return out


class PollSocket:
    """One client's long-poll loop, read like a WebSocket by loadgen_clients.Client.read."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        contexts: list[str],
        stats: PollStats,
        wait: float,
    ):
        self.http = http
        self.base_url = base_url
        self.contexts = contexts
        self.stats = stats
        self.wait = wait
        self.cursor = 0
        self.epoch: str | None = None
        self.pending: deque[bytes] = deque()

    async def start(self, cursor: int) -> dict:
        """The first poll (no wait): the epoch and the refused contexts; `next` is where
        delivery starts."""
        self.cursor = cursor
        body = await self.poll(0)
        if body is None:
            raise RuntimeError("the first poll failed")
        self.epoch = body["epoch"]
        self.cursor = body["next"]
        return body

    async def poll(self, wait: float) -> dict | None:
        """One request; its answer, or None after a failure (having waited as told)."""
        params = {"contexts": ",".join(self.contexts), "wait": f"{wait:g}"}
        if self.epoch:
            params["epoch"] = self.epoch
        sent = time.monotonic_ns()
        try:
            url = f"{self.base_url}{POLL_PATH}{self.cursor}"
            response = await self.http.get(url, params=params)
        except httpx.TransportError:
            self.stats.failed += 1
            await asyncio.sleep(POLL_ERROR_PAUSE_S)
            return None
        self.stats.answered_at.append(time.time_ns())
        self.stats.took_us.append((time.monotonic_ns() - sent) // 1000)
        if response.status_code == 200:
            return orjson.loads(response.content)
        if response.status_code == 429:
            self.stats.throttled += 1
            await asyncio.sleep(retry_after_s(response, POLL_ERROR_PAUSE_S))
        else:
            self.stats.failed += 1
            await asyncio.sleep(POLL_ERROR_PAUSE_S)
        return None

    async def recv(self, decode: bool = False) -> bytes:
        while not self.pending:
            body = await self.poll(self.wait)
            if body is not None:
                self.pending.extend(self.messages(body))
        return self.pending.popleft()

    def messages(self, body: dict) -> list[bytes]:
        """The answer as WebSocket messages: a batch per context covering (cursor, next],
        or a reset per context; nothing for an answer without changes."""
        before, self.cursor = self.cursor, max(self.cursor, body["next"])
        reset = body.get("reset")
        if reset:
            return [
                orjson.dumps({"type": "reset", "context": ctx, "seq": reset["seq"]})
                for ctx in reset["contexts"]
            ]
        by_context: dict[str, list] = {}
        for item in body["changes"]:
            by_context.setdefault(item["context"], []).append(item)
        return [
            orjson.dumps(
                {
                    "type": "batch",
                    "context": ctx,
                    "seq_from": items[0]["seq"],
                    "seq_to": body["next"],
                    "prev_seq": before,
                    "changes": items,
                }
            )
            for ctx, items in by_context.items()
        ]

    async def close(self) -> None:
        await self.http.aclose()


# -- clients and the generator ------------------------------------------------------------------


class HttpClient(Client):
    """loadgen_clients.Client whose `ws` is an SseSocket or a PollSocket."""

    __slots__ = ("address", "gen")

    def __init__(self, index: int, contexts: list[str], gen: HttpLoadGen):
        super().__init__(index, contexts)
        self.gen = gen
        self.address = source_address(gen.args.address_block, index)

    async def open(self, url: str, *, compression: str | None = None, attempts: int = 3) -> bool:
        for attempt in range(attempts):
            socket = None
            try:
                if self.gen.args.transport == "sse":
                    socket = SseSocket(
                        http_client(self.address, httpx.Timeout(60, connect=60)),
                        url + SSE_PATH,
                        self.contexts,
                    )
                    reply = await socket.open()
                    start = dict.fromkeys(reply["contexts"], reply["seq"])
                else:
                    wait = self.gen.args.wait
                    socket = PollSocket(
                        http_client(self.address, httpx.Timeout(wait + 15, connect=60)),
                        url,
                        self.contexts,
                        self.gen.polls,
                        wait,
                    )
                    reply = await socket.start(self.gen.head_seq)
                    refused = {r["context"] for r in reply["rejected"]}
                    start = {c: socket.cursor for c in self.contexts if c not in refused}
                self.rejected = len(reply.get("rejected") or [])
                self.streams = {ctx: Stream(seq) for ctx, seq in start.items()}
                self.ws = socket
                return True
            except Exception:
                if socket is not None:
                    with contextlib.suppress(Exception):
                        await socket.close()
                await asyncio.sleep(0.5 * (attempt + 1))
        return False


class HttpLoadGen(LoadGen):
    """loadgen_group.LoadGen with HTTP clients; reports add the long polls and SSE reopens."""

    def __init__(self, args: argparse.Namespace, plan: list[list[str]]):
        super().__init__(args, plan)
        self.polls = PollStats()
        self.head_seq = 0
        self.clients = [HttpClient(i, contexts, self) for i, contexts in enumerate(plan)]

    async def open_all(self) -> dict:
        # Long polls start from the head, as after loading a snapshot of that seq.
        async with await psycopg.AsyncConnection.connect(self.args.database_url) as conn:
            row = await (await conn.execute("SELECT head_seq FROM change_log_state")).fetchone()
        self.head_seq = row[0]
        return await super().open_all()

    async def report(self, window: dict) -> dict:
        out = await super().report(window)
        out["transport"] = self.args.transport
        out["http"] = self.polls.window(window.get("from_ns", 0), window.get("to_ns", 2**62))
        out["http"]["sse_reopens"] = sum(
            c.ws.reopens for c in self.clients if isinstance(c.ws, SseSocket)
        )
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", required=True, choices=TRANSPORTS)
    loadgen.common_arguments(parser, url_help="http://127.0.0.1:<port>")
    parser.add_argument(
        "--address-block", type=int, default=0, help="0-150: which 127.<100+n>.x.y addresses"
    )
    parser.add_argument("--wait", type=float, default=POLL_WAIT_S, help="long poll `wait`, s")
    args = parser.parse_args()
    args.compression = None  # LoadGen.open_all passes it on; HTTP has none here
    loadgen.run_bounded(args, HttpLoadGen, name="loadgen_http")


if __name__ == "__main__":
    main()
