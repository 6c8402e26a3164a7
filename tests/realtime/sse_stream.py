"""The SSE tests' client: one request to `GET /api/stream/dashboard` on the real ASGI
application, read event by event (other apps' tests stream with it too)."""

import json

from channels.testing import ApplicationCommunicator

from config.asgi import application
from realtime import sse

PATH = "/api/stream/dashboard"


class Stream:
    """One SSE request on the ASGI application, read event by event."""

    def __init__(self, query: str = "", headers=None, method: str = "GET", path: str = PATH):
        self.communicator = ApplicationCommunicator(
            application,
            {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": method,
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "root_path": "",
                "query_string": query.encode(),
                "headers": [(b"host", b"testserver"), *(headers or [])],
                "client": ("127.0.0.1", 40000),
                "server": ("testserver", 80),
            },
        )
        self.buffer = b""
        self.raw = b""
        self.ended = False
        self.status = None
        self.headers: dict[bytes, bytes] = {}

    async def start(self, timeout: float = 5) -> "Stream":
        await self.communicator.send_input({"type": "http.request", "body": b""})
        start = await self.communicator.receive_output(timeout)
        assert start["type"] == "http.response.start"
        self.status = start["status"]
        self.headers = {k.lower(): v for k, v in start.get("headers", [])}
        return self

    async def chunk(self, timeout: float = 5) -> bytes:
        message = await self.communicator.receive_output(timeout)
        assert message["type"] == "http.response.body"
        assert not self.ended, "a body chunk after the end"
        self.ended = not message.get("more_body", False)
        self.raw += message["body"]
        return message["body"]

    async def block(self, timeout: float = 5) -> str:
        """The next block of lines ended by a blank line."""
        while b"\n\n" not in self.buffer:
            assert not self.ended, f"the stream ended; left: {self.buffer!r}"
            self.buffer += await self.chunk(timeout)
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        return block.decode()

    async def event(self, timeout: float = 5) -> dict:
        fields: dict = {}
        for line in (await self.block(timeout)).split("\n"):
            name, _, value = line.partition(": ")
            if name == "data":
                fields["data"] = fields.get("data", "") + value
            else:
                assert name not in fields, line
                fields[name] = value
        if "data" in fields:
            fields["message"] = json.loads(fields["data"])
            assert fields["message"]["type"] == fields["event"]
        return fields

    async def until(self, kind: str, timeout: float = 5) -> dict:
        """The next event of `kind`, skipping heartbeats."""
        while True:
            event = await self.event(timeout)
            if event.get("event") == kind:
                return event
            assert event.get("event") == "heartbeat", event

    async def collect(self, quiet: float = 0.6) -> list[dict]:
        """Every event until nothing arrives for `quiet` seconds (heartbeats skipped)."""
        events = []
        while True:
            while b"\n\n" in self.buffer:
                event = await self.event()
                if event.get("event") != "heartbeat":
                    events.append(event)
            if await self.communicator.receive_nothing(timeout=quiet):
                return events
            self.buffer += await self.chunk()

    async def opened(self) -> tuple[dict, dict]:
        """Start, check the stream headers and `retry:`, return hello and subscribed."""
        await self.start()
        assert self.status == 200, self.raw
        assert self.headers[b"content-type"] == b"text/event-stream"
        assert self.headers[b"cache-control"] == b"no-cache"
        assert self.headers[b"x-accel-buffering"] == b"no"
        assert await self.block() == f"retry: {sse.RETRY_MS}"
        hello = await self.event()
        assert hello["event"] == "hello" and "id" not in hello
        subscribed = await self.until("subscribed")
        assert "id" not in subscribed
        return hello["message"], subscribed["message"]

    async def close(self) -> None:
        await self.communicator.send_input({"type": "http.disconnect"})
        await self.communicator.wait(timeout=5)


async def refused(query: str = "", headers=None, method: str = "GET") -> tuple[int, dict, dict]:
    """A request that must be answered by one JSON error, nothing streamed."""
    stream = Stream(query, headers, method)
    await stream.start()
    body = await stream.chunk()
    assert stream.ended, "an error response is one body"
    assert stream.headers[b"content-type"] == b"application/json"
    await stream.communicator.wait(timeout=5)
    return stream.status, json.loads(body), stream.headers


def company(world, name: str) -> str:
    return f"company:{world[name]}"


def seqs(batch: dict) -> list[int]:
    return [item["seq"] for item in batch["changes"]]
