"""The WebSocket clients of one load generator process (bench/loadgen.py): each
client's streams, what it receives and what they all record."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from array import array
from bisect import bisect_right
from collections import Counter

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

RATE_BUCKET_NS = 100_000_000  # frames and items are counted per 100 ms
STAMP = "bench:"
KINDS = ("company", "industry", "overview", "other")
# SO_LINGER on, 0 s: close() sends a TCP reset at once, no close frame and no FIN, as a
# client that vanishes (a dropped network, a killed tab) looks to the server at best.
LINGER_RESET = struct.pack("ii", 1, 0)


def kind_of(context: str) -> int:
    name = context.partition(":")[0]
    return KINDS.index(name) if name in KINDS else len(KINDS) - 1


def stamp_of(source: str) -> int | None:
    """The writer's commit time in a `source` value `bench:<time_ns>[:...]`."""
    if not source.startswith(STAMP):
        return None
    digits = source[len(STAMP) :].split(":", 1)[0]
    return int(digits) if digits.isdigit() else None


class Stream:
    """One client's view of one context."""

    __slots__ = ("cursor", "floor", "frame_hi", "frame_lo", "seqs", "start")

    def __init__(self, start: int):
        self.start = start  # `subscribed.seq`: delivery starts after it
        self.cursor = start  # seq_to of the last batch
        self.floor = start  # items at or below this were had (or pruned) already
        self.seqs = array("q")  # received item seqs, ascending
        self.frame_lo = array("q")  # each batch covers (lo, hi]
        self.frame_hi = array("q")

    def prune(self, through: int) -> None:
        cut = bisect_right(self.seqs, through)
        del self.seqs[:cut]
        cut = bisect_right(self.frame_hi, through)
        del self.frame_lo[:cut]
        del self.frame_hi[:cut]
        self.floor = max(self.floor, through)


class Recorder:
    """What every client of this process measured, shared."""

    def __init__(self) -> None:
        self.stamp_ns = array("q")  # commit time of each stamped item received
        self.latency_us = array("q")
        self.kind = array("b")  # KINDS index of the item's context
        self.loop_lag_us = array("q")  # event-loop lateness, sampled every LAG_TICK_S
        self.loop_lag_at = array("q")
        self.frames: Counter[int] = Counter()  # per 100 ms of receive time
        self.items: Counter[int] = Counter()


class Client:
    __slots__ = (
        "closed",
        "contexts",
        "duplicates",
        "errors",
        "gaps",
        "index",
        "rejected",
        "resets",
        "streams",
        "task",
        "ws",
    )

    def __init__(self, index: int, contexts: list[str]):
        self.index = index
        self.contexts = contexts
        self.ws = None
        self.streams: dict[str, Stream] = {}
        self.task: asyncio.Task | None = None
        self.duplicates = self.gaps = self.resets = self.errors = self.rejected = 0
        self.closed: int | None = None  # close code, once closed by the server

    async def connect_options(self, url: str) -> dict:
        """Options of `connect` beyond the common ones (SlowClient's socket)."""
        return {}

    async def open(self, url: str, *, compression: str | None, attempts: int = 3) -> bool:
        """Connect and subscribe; a client that had streams resumes each from its cursor
        (`since`), keeping what it received for the loss check."""
        for attempt in range(attempts):
            try:
                extra = await self.connect_options(url)
                self.ws = await connect(
                    url,
                    max_size=None,
                    compression=compression,
                    open_timeout=60,
                    ping_interval=None,
                    close_timeout=2,
                    user_agent_header="carbon-bench-loadgen",
                    **extra,
                )
                hello = orjson.loads(await asyncio.wait_for(self.ws.recv(decode=False), 60))
                if hello.get("type") != "hello":
                    raise RuntimeError(f"expected hello, got {hello.get('type')}")
                subscribe: dict = {"type": "subscribe", "contexts": self.contexts, "ref": 1}
                if self.streams:
                    subscribe["contexts"] = list(self.streams)
                    subscribe["since"] = {ctx: s.cursor for ctx, s in self.streams.items()}
                await self.ws.send(json.dumps(subscribe))
                while True:
                    reply = orjson.loads(await asyncio.wait_for(self.ws.recv(decode=False), 60))
                    if reply.get("type") == "subscribed" and reply.get("ref") == 1:
                        break
                self.rejected = len(reply.get("rejected") or [])
                if not self.streams:
                    self.streams = {ctx: Stream(reply["seq"]) for ctx in reply["contexts"]}
                self.closed = None
                return True
            except Exception:
                if self.ws is not None:
                    self.ws.transport.abort()
                    self.ws = None
                await asyncio.sleep(0.5 * (attempt + 1))
        return False

    async def arrive(self) -> None:
        """Wait until this client's first connection is due (at once)."""

    async def abort(self) -> None:
        """Stop reading and drop the connection with a TCP reset, no close frame."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        ws, self.ws = self.ws, None
        if ws is not None:
            sock = ws.transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            ws.transport.abort()

    async def read(self, recorder: Recorder) -> None:
        ws, streams = self.ws, self.streams
        stamp_ns, latency_us, kinds = recorder.stamp_ns, recorder.latency_us, recorder.kind
        kind_by_context = {ctx: kind_of(ctx) for ctx in streams}
        frames, items_count = recorder.frames, recorder.items
        try:
            while True:
                data = await ws.recv(decode=False)
                now = time.time_ns()
                message = orjson.loads(data)
                kind = message.get("type")
                if kind != "batch":
                    if kind == "reset":
                        self.resets += 1
                        stream = streams.get(message.get("context"))
                        if stream is not None:
                            stream.cursor = max(stream.cursor, message["seq"])
                    elif kind == "error":
                        self.errors += 1
                    continue
                stream = streams.get(message["context"])
                if stream is None:
                    self.errors += 1
                    continue
                prev_seq, seq_to, cursor = message["prev_seq"], message["seq_to"], stream.cursor
                if prev_seq > cursor:
                    self.gaps += 1
                stream.frame_lo.append(prev_seq if prev_seq > cursor else cursor)
                stream.frame_hi.append(seq_to)
                seqs = stream.seqs
                last = seqs[-1] if seqs else stream.floor
                taken = 0
                for item in message["changes"]:
                    seq = item["seq"]
                    if seq <= last:
                        self.duplicates += 1
                        continue
                    seqs.append(seq)
                    last = seq
                    taken += 1
                    if item["entity"] == "emission_record":
                        source = item["fields"].get("source")
                        if source and source.startswith(STAMP):
                            stamp = stamp_of(source)
                            if stamp is not None:
                                stamp_ns.append(stamp)
                                latency_us.append((now - stamp) // 1000)
                                kinds.append(kind_by_context[message["context"]])
                if seq_to > cursor:
                    stream.cursor = seq_to
                bucket = now // RATE_BUCKET_NS
                frames[bucket] += 1
                items_count[bucket] += taken
        except ConnectionClosed as exc:
            self.closed = exc.rcvd.code if exc.rcvd else 1006
        except asyncio.CancelledError:
            raise
        except Exception:
            self.errors += 1
            self.closed = -1
