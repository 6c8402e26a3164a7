"""A client process of bench/baselines.py: many WebSocket connections, driven over stdin.

    python -m bench.baseline_clients --port 8101 --deadline 300

The connections are a minimal RFC 6455 client on an asyncio Protocol, not the
`websockets` library: the clients share the machine's two cores with the server they
measure, so each received frame must cost them as little as possible. A connection
sends the upgrade request, checks the 101 answer and its Sec-WebSocket-Accept, then cuts
the server's (unmasked) frames out of its byte stream; pings are answered with pongs.
Every frame of the benchmark is the publisher's pre-encoded text with, at fixed
offsets, its sequence number and the `time.time_ns()` taken just before it was
published (see `frame()`); its latency is the receive time (one `time.time_ns()` per
read from the socket) minus that stamp, on the same machine's clock. The event loop is
uvloop when it is installed (the bench extra's uvicorn[standard] brings it): on this
machine it took the clients' CPU per frame from 12 to 19 us down to about 8 against
asyncio's own loop, which `--loop asyncio` selects.

Commands, one per line on stdin, each answered with one JSON line on stdout:

    open N          open N more connections: {"open", "failed", "errors", "seconds"}
    window LO HI    measure frames LO..HI from now on (forgets the previous window):
                    {"window": [LO, HI]}
    wait T          wait up to T seconds until every connection has HI, then report the
                    window: {"connections", "closed", "complete", "missing",
                    "out_of_order", "hist" (latency, 100 us buckets), "max_ms",
                    "loop_lag_ms" {p50, p99, max}, "waited_s"}
    close           close every connection and exit: {"closed": n}

The event loop's lateness is sampled every LAG_TICK_S: a client process that falls
behind shows it there (and the scenario reports it next to the server's figures).
The process exits by itself at the deadline or when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import os
import time
from array import array
from collections import Counter

from bench.loadclients import answer, nofile_raise, stdin_lines

BUCKET_US = 100
LAG_TICK_S = 0.005
OPENING_CONCURRENCY = 64
OPEN_TIMEOUT_S = 30.0
ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# The frame: JSON with its two numbers as fixed-width strings, padded to FRAME_BYTES.
FRAME_BYTES = 172
FRAME_HEAD = '{"type":"bench","seq":"%012d","sent_ns":"%019d","pad":"'
SEQ_AT = FRAME_HEAD.index("%012d")
SENT_AT = SEQ_AT + 12 + len('","sent_ns":"')


def frame(seq: int, sent_ns: int) -> str:
    """The publisher's pre-encoded frame (FRAME_BYTES of ASCII)."""
    head = FRAME_HEAD % (seq, sent_ns)
    return head + "x" * (FRAME_BYTES - len(head) - 2) + '"}'


def frame_numbers(payload: bytes) -> tuple[int, int]:
    """(seq, sent_ns) of a frame."""
    return int(payload[SEQ_AT : SEQ_AT + 12]), int(payload[SENT_AT : SENT_AT + 19])


class Window:
    """What this process measures for one step: frames lo..hi."""

    def __init__(self, lo: int = 1, hi: int = 0):
        self.lo = lo
        self.hi = hi
        self.latency_us = array("q")
        self.out_of_order = 0
        self.lag_us = array("q")


class Connection(asyncio.Protocol):
    """One WebSocket connection that only reads."""

    def __init__(self, owner: Clients, host: str, path: str):
        self.owner = owner  # holds the current Window (a new one per step)
        self.host = host
        self.path = path
        self.key = base64.b64encode(os.urandom(16))
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future = asyncio.get_running_loop().create_future()
        self.buffer = b""
        self.upgraded = False
        self.closed = False
        self.last = 0  # highest seq received
        self.got = 0  # frames of the current window received

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            self._upgrade(buffer[:end])
            buffer = buffer[end + 4 :]
        now_ns = time.time_ns()
        window = self.owner.window
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            opcode = buffer[pos] & 0x0F
            length = buffer[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                start = pos + 10
            if size - start < length:
                break
            payload = buffer[start : start + length]
            pos = start + length
            if opcode == 1:
                self._frame(payload, now_ns, window)
            elif opcode == 9:
                self._control(0xA, payload)
            elif opcode == 8:
                self.closed = True
                self.transport.close()
                return
        self.buffer = buffer[pos:]

    def _upgrade(self, head: bytes) -> None:
        status, *headers = head.split(b"\r\n")
        fields = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(b":") for line in headers)
        }
        accept = base64.b64encode(hashlib.sha1(self.key + ACCEPT_GUID).digest())
        if status.split()[1:2] != [b"101"] or fields.get(b"sec-websocket-accept") != accept:
            self.transport.close()
            if not self.opened.done():
                self.opened.set_exception(ConnectionError(status.decode(errors="replace")))
            return
        self.upgraded = True
        self.opened.set_result(True)

    def _frame(self, payload: bytes, now_ns: int, window: Window) -> None:
        seq, sent_ns = frame_numbers(payload)
        if seq <= self.last:
            window.out_of_order += 1
            return
        self.last = seq
        if window.lo <= seq <= window.hi:
            self.got += 1
            window.latency_us.append((now_ns - sent_ns) // 1000)

    def _control(self, opcode: int, payload: bytes) -> None:
        # Client frames are masked (RFC 6455 5.3); payloads of control frames are small.
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def close(self) -> None:
        if self.transport and not self.closed:
            with contextlib.suppress(Exception):
                self._control(0x8, (1000).to_bytes(2, "big"))
            self.transport.close()


class Clients:
    """This process's connections and the window they measure."""

    def __init__(self, port: int, path: str):
        self.port = port
        self.path = path
        self.connections: list[Connection] = []
        self.window = Window()
        self.failed = 0
        self.errors: list[str] = []

    async def open(self, count: int) -> dict:
        started = time.perf_counter()
        gate = asyncio.Semaphore(OPENING_CONCURRENCY)
        loop = asyncio.get_running_loop()
        host = f"127.0.0.1:{self.port}"

        async def one() -> None:
            async with gate:
                try:
                    _, connection = await asyncio.wait_for(
                        loop.create_connection(
                            lambda: Connection(self, host, self.path),
                            "127.0.0.1",
                            self.port,
                        ),
                        OPEN_TIMEOUT_S,
                    )
                    await asyncio.wait_for(connection.opened, OPEN_TIMEOUT_S)
                    self.connections.append(connection)
                except Exception as exc:  # counted and reported; the run goes on
                    self.failed += 1
                    if len(self.errors) < 5:
                        self.errors.append(f"{type(exc).__name__}: {exc}"[:200])

        await asyncio.gather(*(one() for _ in range(count)))
        return {
            "open": len(self.connections),
            "failed": self.failed,
            "errors": self.errors,
            "seconds": round(time.perf_counter() - started, 2),
        }

    def start_window(self, lo: int, hi: int) -> dict:
        self.window = Window(lo, hi)
        for connection in self.connections:
            connection.got = 0
        return {"window": [lo, hi]}

    async def wait(self, timeout: float) -> dict:
        started = time.monotonic()
        hi = self.window.hi
        while time.monotonic() - started < timeout and any(
            c.last < hi and not c.closed for c in self.connections
        ):
            await asyncio.sleep(0.02)
        return {**self.report(), "waited_s": round(time.monotonic() - started, 2)}

    def report(self) -> dict:
        window = self.window
        expected = max(0, window.hi - window.lo + 1)
        latencies = window.latency_us
        hist = Counter(us // BUCKET_US for us in latencies)
        lags = sorted(window.lag_us)
        return {
            "connections": len(self.connections),
            "closed": sum(c.closed for c in self.connections),
            "complete": sum(c.got == expected for c in self.connections),
            "missing": sum(max(0, expected - c.got) for c in self.connections),
            "out_of_order": window.out_of_order,
            "hist": {str(bucket): count for bucket, count in hist.items()},
            "max_ms": max(latencies) / 1000 if latencies else None,
            "loop_lag_ms": {
                "p50": lags[len(lags) // 2] / 1000 if lags else None,
                "p99": lags[int(len(lags) * 0.99)] / 1000 if lags else None,
                "max": lags[-1] / 1000 if lags else None,
            },
        }

    async def watch_loop(self) -> None:
        """Sample how late the event loop runs a callback (the client's own backlog)."""
        due = time.monotonic_ns()
        while True:
            due += int(LAG_TICK_S * 1e9)
            await asyncio.sleep(max(0.0, (due - time.monotonic_ns()) / 1e9))
            now = time.monotonic_ns()
            self.window.lag_us.append(max(0, now - due) // 1000)
            due = max(due, now)

    def close(self) -> int:
        for connection in self.connections:
            connection.close()
        return len(self.connections)


async def serve(args: argparse.Namespace) -> None:
    clients = Clients(args.port, args.path)
    watcher = asyncio.create_task(clients.watch_loop())
    try:
        async for line in stdin_lines():
            command, _, rest = line.partition(" ")
            if not line or command == "close":
                answer({"closed": clients.close()})
                return
            if command == "open":
                answer(await clients.open(int(rest)))
            elif command == "window":
                lo, hi = (int(v) for v in rest.split())
                answer(clients.start_window(lo, hi))
            elif command == "wait":
                answer(await clients.wait(float(rest)))
            else:
                answer({"error": f"unknown command {line!r}"})
    finally:
        watcher.cancel()
        clients.close()
        await asyncio.sleep(0.1)  # let the close frames go out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ws")
    parser.add_argument("--deadline", type=float, default=300.0, help="exit after this long")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    nofile_raise()

    async def bounded() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(serve(args), args.deadline)

    if args.loop == "uvloop" and uvloop_available():
        import uvloop

        uvloop.run(bounded())
    else:
        asyncio.run(bounded())


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
