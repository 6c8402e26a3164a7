"""Bytes on the wire for the bandwidth scenario (bench/bandwidth.py): what TCP, TLS and
WebSocket framing add to each exchange, an HTTP client and a WebSocket connection that
count them."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import math
import os
import socket
import struct
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode

# A browser's fetch of the page and its WebSocket handshake send headers like these.
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/131.0.0.0 Safari/537.36"
)
REQUEST_HEADERS = {
    "User-Agent": USER_AGENT,
    "Accept": "application/json",
    "Accept-Encoding": "gzip, deflate",
    "Accept-Language": "en-US,en;q=0.9",
}
# For the estimate of what the Internet adds: IPv4 + TCP with timestamps per packet, a
# TLS 1.3 record's header, tag and content type, payload per packet on a 1500-byte MTU.
IP_TCP_HEADER = 52
TLS_RECORD = 22
TLS_RECORD_MAX = 16_384
MSS = 1448


def tcp_bytes(sock) -> tuple[int, int]:
    """(sent, received) TCP payload bytes of a connected socket so far, from TCP_INFO
    (`tcpi_bytes_acked` counts the SYN as one byte)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    acked, received = struct.unpack_from("QQ", info, 120)
    return max(acked - 1, 0), received


def frame_bytes(payload: int, *, masked: bool) -> int:
    """A WebSocket frame's size on the wire (RFC 6455: client frames carry a 4-byte mask)."""
    length = 0 if payload < 126 else 2 if payload < 65_536 else 8
    return 2 + length + payload + (4 if masked else 0)


def internet_bytes(sizes: list[int]) -> int:
    """Messages of these sizes with TLS 1.3 records and IPv4/TCP packets around them
    (1500-byte MTU, each message flushed on its own; ACKs not counted)."""
    total = 0
    for size in sizes:
        records = max(1, math.ceil(size / TLS_RECORD_MAX))
        wrapped = size + records * TLS_RECORD
        total += wrapped + math.ceil(wrapped / MSS) * IP_TCP_HEADER
    return total


@dataclass
class Exchange:
    """One HTTP GET as the client saw it."""

    started_ns: int
    done_ns: int
    sent: int
    received: int
    wire_body: int
    body: bytes

    @property
    def headers(self) -> int:
        return self.received - self.wire_body


class HttpClient:
    """GETs on one keep-alive connection (a new one when the server closed it), each
    measured by the socket's TCP counters around it."""

    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None
        # A duplicate of the socket's descriptor: TCP_INFO stays readable even after
        # http.client closed its own (a `Connection: close` answer).
        self.probe: socket.socket | None = None
        self.connections = 0

    def _connect(self) -> None:
        self.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.conn.connect()
        self.probe = socket.socket(fileno=os.dup(self.conn.sock.fileno()))
        self.connections += 1

    def get(self, path: str) -> Exchange:
        if self.conn is None or self.conn.sock is None:
            self._connect()
        try:
            return self._exchange(path)
        except (http.client.RemoteDisconnected, ConnectionError):
            self._connect()  # the server closed an idle keep-alive connection
            return self._exchange(path)

    def _exchange(self, path: str) -> Exchange:
        sent0, received0 = tcp_bytes(self.probe)
        started = time.time_ns()
        self.conn.request("GET", path, headers=REQUEST_HEADERS)
        response = self.conn.getresponse()
        raw = response.read()
        done = time.time_ns()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {raw[:200]!r}")
        sent1, received1 = tcp_bytes(self.probe)
        body = gzip.decompress(raw) if response.getheader("Content-Encoding") == "gzip" else raw
        return Exchange(started, done, sent1 - sent0, received1 - received0, len(raw), body)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.probe is not None:
            self.probe.close()
        self.conn = self.probe = None


@dataclass
class Tally:
    count: int = 0
    bytes: int = 0
    sizes: list[int] = field(default_factory=list)

    def add(self, size: int) -> None:
        self.count += 1
        self.bytes += size
        self.sizes.append(size)


def frame_kind(frame: Frame) -> str:
    if frame.opcode is Opcode.TEXT and frame.fin:
        with contextlib.suppress(ValueError):
            message = json.loads(frame.data)
            if message.get("type") == "batch" and not message.get("changes"):
                return "batch_empty"  # a catch-up that only moves the cursor
            return str(message.get("type"))
        return "text"
    return {Opcode.PING: "ws_ping", Opcode.PONG: "ws_pong", Opcode.CLOSE: "close"}.get(
        frame.opcode, "fragment"
    )


class CountingConnection(ClientConnection):
    """The library's client connection, counting every byte and frame the server sent."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.raw_received = 0
        self.received: dict[str, Tally] = {}
        self.sent: dict[str, Tally] = {}

    def data_received(self, data: bytes) -> None:
        self.raw_received += len(data)
        super().data_received(data)

    def process_event(self, event) -> None:
        if isinstance(event, Frame):
            kind = frame_kind(event)
            self.received.setdefault(kind, Tally()).add(frame_bytes(len(event.data), masked=False))
            if event.opcode is Opcode.PING:
                # The library answers a ping with a pong carrying the same data.
                self.sent.setdefault("ws_pong", Tally()).add(
                    frame_bytes(len(event.data), masked=True)
                )
        super().process_event(event)

    async def send_counted(self, kind: str, message: dict) -> None:
        text = json.dumps(message, separators=(",", ":"))
        self.sent.setdefault(kind, Tally()).add(frame_bytes(len(text.encode()), masked=True))
        await self.send(text)
