"""Clients that follow contexts through faults the way the browser client does.

A follower reconnects after any loss of its connection with the browser client's
backoff (static/js/backoff.js: full jitter, first ceiling 0.5 s, doubling), resuming from
its per-context cursors (WebSocket: `since` map; SSE: `Last-Event-ID`). It records every
batch, every connection and every close, so a test can tell what the fault did to it
and how long it took to get data again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from tests.sse_events import sse_events

# httpx logs every request at INFO: hundreds of reconnects would bury the figures.
logging.getLogger("httpx").setLevel(logging.WARNING)

# The browser client's reconnection backoff (static/js/backoff.js).
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
# A connection attempt (TCP, handshake, `hello`) that takes longer than this failed.
CONNECT_TIMEOUT_S = 5.0
# SSE: a stream silent this long is dead (heartbeats come every 15 s at most).
SSE_READ_TIMEOUT_S = 20.0


class Backoff:
    """static/js/backoff.js in Python."""

    def __init__(self, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S):
        self.base, self.cap, self.attempt = base, cap, 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return random.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class Batch:
    context: str
    cursor_before: int
    prev_seq: int
    seq_to: int
    # (seq, entity, id) of each item, in the order received.
    items: list[tuple[int, str, str]]
    at: float


@dataclass
class Follower:
    """One client following `contexts` from `start` (a seq) until cancelled."""

    name: str
    contexts: list[str]
    start: int
    deadline: float
    cursors: dict[str, int] = field(default_factory=dict)
    batches: dict[str, list[Batch]] = field(default_factory=lambda: defaultdict(list))
    # Monotonic times at which a connection was greeted (`hello`), and how each ended:
    # (time, what the client saw).
    greeted: list[float] = field(default_factory=list)
    closes: list[tuple[float, str]] = field(default_factory=list)
    failed_attempts: int = 0
    unexpected: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cursors = dict.fromkeys(self.contexts, self.start)
        self.backoff = Backoff()

    # -- what happened ------------------------------------------------------------------

    def take(self, message: dict) -> None:
        """A message from the server: batches move the cursors; resets and errors are
        recorded as unexpected (none of these faults may cause one)."""
        kind = message.get("type")
        if kind == "hello":
            self.greeted.append(time.monotonic())
            self.backoff.reset()
        elif kind == "batch":
            context = message["context"]
            before = self.cursors.get(context, self.start)
            items = [(item["seq"], item["entity"], item["id"]) for item in message["changes"]]
            self.batches[context].append(
                Batch(
                    context, before, message["prev_seq"], message["seq_to"], items, time.monotonic()
                )
            )
            self.cursors[context] = max(before, message["seq_to"])
        elif kind in ("reset", "error"):
            self.unexpected.append(message)

    def first_batch_after(
        self, moment: float, *, greeted_after: bool = False, min_seq: int = 0
    ) -> float | None:
        """When the first batch that arrived after `moment` (on a connection greeted
        after `moment`, if asked; with `seq_to` above `min_seq`) arrived."""
        since = moment
        if greeted_after:
            later = [t for t in self.greeted if t > moment]
            if not later:
                return None
            since = later[0]
        times = [
            b.at
            for batches in self.batches.values()
            for b in batches
            if b.at > since and b.seq_to > min_seq
        ]
        return min(times) if times else None

    def caught_up(self, heads: dict[str, int]) -> bool:
        return all(self.cursors[c] >= heads.get(c, 0) for c in self.contexts)

    # -- the connection loop ------------------------------------------------------------

    async def run(self) -> None:
        """Connect, follow, and after any loss reconnect with backoff, until cancelled or
        past the deadline."""
        while time.monotonic() < self.deadline:
            greeted = len(self.greeted)
            try:
                outcome = await self.follow_once()
            except ConnectionClosed as exc:
                rcvd = exc.rcvd
                outcome = f"closed {rcvd.code}" if rcvd else "closed without a close frame (1006)"
            except (OSError, TimeoutError, InvalidHandshake, httpx.HTTPError) as exc:
                outcome = f"{type(exc).__name__}: {exc}"[:200]
            self.closes.append((time.monotonic(), outcome))
            if len(self.greeted) == greeted:
                self.failed_attempts += 1
            delay = min(self.backoff.next(), max(0.0, self.deadline - time.monotonic()))
            await asyncio.sleep(delay)

    async def follow_once(self) -> str:
        """One connection, followed until it ends; how it ended, if not by an error."""
        raise NotImplementedError


class WsFollower(Follower):
    """A WebSocket client: subscribe with `since` = its cursor per context."""

    url: str = ""

    async def follow_once(self) -> str:
        try:
            ws = await asyncio.wait_for(connect(self.url, open_timeout=None), CONNECT_TIMEOUT_S)
        except InvalidStatus as exc:
            raise OSError(f"handshake refused: HTTP {exc.response.status_code}") from exc
        async with ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT_S))
            self.take(hello)
            await ws.send(
                json.dumps(
                    {"type": "subscribe", "contexts": self.contexts, "since": dict(self.cursors)}
                )
            )
            async for raw in ws:
                self.take(json.loads(raw))
        return f"closed {ws.close_code}"


class SseFollower(Follower):
    """An EventSource-like client: `since` on the first request, then `Last-Event-ID`."""

    url: str = ""
    last_event_id: str | None = None

    async def follow_once(self) -> str:
        params = {"contexts": ",".join(self.contexts)}
        headers = {}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        else:
            params["since"] = str(self.start)
        timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=SSE_READ_TIMEOUT_S)
        async with (
            httpx.AsyncClient(timeout=timeout) as client,
            client.stream("GET", self.url, params=params, headers=headers) as response,
        ):
            if response.status_code != 200:
                await response.aread()
                raise httpx.HTTPStatusError(
                    f"HTTP {response.status_code}: {response.text[:100]}",
                    request=response.request,
                    response=response,
                )
            async for event in sse_events(response):
                self.take(event.json())
                if event.event == "batch" and event.id:
                    self.last_event_id = event.id
        return "stream ended by the server"


def followed_contexts(world: dict) -> list[str]:
    """What the fault tests' clients follow: Acme's page, its industry and the overview,
    so a fault shows on every kind of context at once."""
    return [f"company:{world['acme']}", "industry:steel", "overview"]


def followers(
    stack, contexts: list[str], start: int, *, websockets: int, sse: int, seconds: float
) -> list[Follower]:
    deadline = time.monotonic() + seconds
    made: list[Follower] = []
    for n in range(websockets):
        follower = WsFollower(f"ws{n}", contexts, start, deadline)
        follower.url = stack.ws_url
        made.append(follower)
    for n in range(sse):
        follower = SseFollower(f"sse{n}", contexts, start, deadline)
        follower.url = f"{stack.http_url}/api/stream/dashboard"
        made.append(follower)
    return made


class Following:
    """Followers running as tasks; `async with` cancels them at the end."""

    def __init__(self, clients: list[Follower]):
        self.clients = clients
        self.tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> Following:
        self.tasks = [asyncio.create_task(c.run(), name=c.name) for c in self.clients]
        return self

    async def __aexit__(self, *exc) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def all_greeted(self, timeout: float = 15) -> None:
        await self.until(lambda: all(c.greeted for c in self.clients), timeout, "greeted")

    async def all_caught_up(self, heads: dict[str, int], timeout: float = 20) -> None:
        await self.until(lambda: all(c.caught_up(heads) for c in self.clients), timeout, "up")

    async def all_received_after(self, moment: float, timeout: float = 30, **how) -> None:
        """Until every client received a batch after `moment` (`how`: as
        Follower.first_batch_after)."""
        await self.until(
            lambda: all(c.first_batch_after(moment, **how) for c in self.clients),
            timeout,
            "receiving",
        )

    async def until(self, condition, timeout: float, what: str) -> None:
        """Wait until `condition()` holds; a client task's failure is raised at once, and
        every client's cursors and last closes are in the error after `timeout`."""
        deadline = time.monotonic() + timeout
        while not condition():
            for task in self.tasks:
                if task.done() and task.exception():
                    raise task.exception()
            if time.monotonic() > deadline:
                state = {c.name: (c.cursors, c.closes[-3:]) for c in self.clients}
                raise AssertionError(f"clients not {what} within {timeout} s: {state}")
            await asyncio.sleep(0.05)
