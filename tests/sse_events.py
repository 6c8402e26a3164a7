"""Server-Sent Events read off an httpx stream the way EventSource reads them, for the
tests' SSE clients that talk to a real server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx


@dataclass
class SseEvent:
    event: str | None
    id: str | None
    data: str

    def json(self) -> dict:
        return json.loads(self.data)


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """Each event of the stream as it ends (a blank line): its data lines joined by
    newlines; comments (heartbeats) and events without data are skipped."""
    event: str | None = None
    event_id: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield SseEvent(event, event_id, "\n".join(data))
            event, event_id, data = None, None, []
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "id":
            event_id = value
        elif field == "data":
            data.append(value)
