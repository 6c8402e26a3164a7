"""The two dashboards of the bandwidth scenario (bench/bandwidth.py): the differential one
(snapshot, then the WebSocket's changes) and the naive one (reloading the page every 10 s)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field

from websockets.exceptions import ConnectionClosed

from bench.bandwidth_wire import (
    CountingConnection,
    Exchange,
    HttpClient,
    frame_bytes,
    tcp_bytes,
)

# The dashboard's page: both dashboards load it (the naive one every reload).
ENDPOINT = "/api/companies/"


def page_totals(body: bytes) -> dict[str, dict]:
    """company id -> {latest_year, total} of one directory page."""
    return {
        row["id"]: {"year": row["latest_year"], "total": row["latest_total_tonnes"]}
        for row in json.loads(body)["results"]
    }


def reload_loop(
    client: HttpClient, opened: float, interval: float, count: int, out: list[Exchange]
) -> None:
    """The naive client: a full reload every `interval`, on an absolute schedule."""
    for i in range(1, count + 1):
        wait = opened + i * interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        out.append(client.get(ENDPOINT))


@dataclass
class Differential:
    """What the differential client received, as it applied it."""

    snapshot: Exchange
    page: dict[str, dict]
    stamps: dict[int, int] = field(default_factory=dict)  # stamp -> received ns
    items: int = 0
    unexpected: int = 0
    one_item_frames: list[int] = field(default_factory=list)
    closed: str | None = None

    def apply(self, text: str, received_ns: int) -> None:
        message = json.loads(text)
        if message.get("type") != "batch":
            return
        changes = message["changes"]
        if len(changes) == 1:
            self.one_item_frames.append(frame_bytes(len(text.encode()), masked=False))
        for item in changes:
            self.items += 1
            fields = item.get("fields", {})
            row = self.page.get(fields.get("company_id") or "")
            if item.get("entity") != "emission_record" or row is None:
                self.unexpected += 1
                continue
            source = fields.get("source") or ""
            if source.startswith("bench:"):
                self.stamps.setdefault(int(source.split(":")[1]), received_ns)
            if fields.get("year") == row["year"] and "total_tonnes" in fields:
                row["total"] = fields["total_tonnes"]


async def receive_loop(ws: CountingConnection, state: Differential) -> None:
    try:
        async for text in ws:
            state.apply(text, time.time_ns())
    except Exception as exc:  # a closed connection ends the run's figures, not the run
        state.closed = repr(exc)
    if ws.close_code is not None and state.closed is None:
        state.closed = f"closed {ws.close_code} {ws.close_reason}"


async def ping_loop(ws: CountingConnection, opened: float, interval: float, until: float) -> None:
    """Application pings on an absolute schedule from the window's start."""
    loop = asyncio.get_running_loop()
    i = 1
    while opened + i * interval < until:
        await asyncio.sleep(max(0.0, opened + i * interval - loop.time()))
        try:
            await ws.send_counted("ping", {"type": "ping", "ref": i})
        except ConnectionClosed:
            return  # the receiver records why
        i += 1


class Job(threading.Thread):
    """A thread whose exception is raised again by `check()`, in the caller."""

    def __init__(self, target, *args):
        super().__init__(daemon=True)
        self.work, self.work_args = target, args
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work(*self.work_args)
        except BaseException as exc:
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def ws_counters(ws: CountingConnection) -> dict:
    """The kernel's counters and the connection's own, read at the same moment."""
    sent, received = tcp_bytes(ws.transport.get_extra_info("socket"))
    return {
        "tcp_sent": sent,
        "tcp_received": received,
        "raw_received": ws.raw_received,
        "received": {k: {"count": t.count, "bytes": t.bytes} for k, t in ws.received.items()},
        "received_sizes": {k: list(t.sizes) for k, t in ws.received.items()},
        "sent": {k: {"count": t.count, "bytes": t.bytes} for k, t in ws.sent.items()},
    }
