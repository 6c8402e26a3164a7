"""Clients that follow contexts through faults the way the browser client does, a writer
that keeps committing, and the check of what they received against the change log.

A follower reconnects after any loss of its connection with the browser client's
backoff (static/js/backoff.js: full jitter, first ceiling 0.5 s, doubling), resuming from
its per-context cursors (WebSocket: `since` map; SSE: `Last-Event-ID`). It records every
batch, every connection and every close, so a test can tell what the fault did to it
and how long it took to get data again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import logging
import random
import statistics
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
import psycopg
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

# httpx logs every request at INFO: hundreds of reconnects would bury the figures.
logging.getLogger("httpx").setLevel(logging.WARNING)

# The browser client's reconnection backoff (static/js/backoff.js).
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
# A connection attempt (TCP, handshake, `hello`) that takes longer than this failed.
CONNECT_TIMEOUT_S = 5.0
# SSE: a stream silent this long is dead (heartbeats come every 15 s at most).
SSE_READ_TIMEOUT_S = 20.0
# The public audience's bit in change_routes.audiences (changes.models.AUDIENCE_BITS).
PUBLIC_BIT = 1


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
            event: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line == "":
                    if "data" in event:
                        self.take(json.loads(event["data"]))
                        if event.get("event") == "batch" and "id" in event:
                            self.last_event_id = event["id"]
                    event = {}
                    continue
                key, _, value = line.partition(":")
                if key in ("event", "id", "data"):
                    event[key] = value.removeprefix(" ")
        return "stream ended by the server"


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
        await self._until(lambda: all(c.greeted for c in self.clients), timeout, "greeted")

    async def all_caught_up(self, heads: dict[str, int], timeout: float = 20) -> None:
        await self._until(lambda: all(c.caught_up(heads) for c in self.clients), timeout, "up")

    async def all_received_after(self, moment: float, timeout: float = 30, **how) -> None:
        """Until every client received a batch after `moment` (`how`: as
        Follower.first_batch_after)."""
        await self._until(
            lambda: all(c.first_batch_after(moment, **how) for c in self.clients),
            timeout,
            "receiving",
        )

    async def _until(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for task in self.tasks:
                if task.done() and task.exception():
                    raise task.exception()
            if time.monotonic() > deadline:
                state = {c.name: (c.cursors, c.closes[-3:]) for c in self.clients}
                raise AssertionError(f"clients not {what} within {timeout} s: {state}")
            await asyncio.sleep(0.05)


# -- writing ------------------------------------------------------------------------------


class Writer:
    """Commits updates through raw SQL on its own connection at about `rate` a second,
    in a thread, until stopped; reconnects when the database goes away. Raw SQL counts
    as much as ORM saves (the triggers capture both)."""

    def __init__(self, database_url: str, world: dict, rate: float = 50, seconds: float = 60):
        self.database_url = database_url
        self.world = world
        self.interval = 1 / rate
        self.deadline = time.monotonic() + seconds
        self.stop_event = threading.Event()
        self.committed = 0
        self.failed = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name="fault-writer", daemon=True)

    def start(self) -> Writer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the writer did not stop"

    def _statements(self):
        w = self.world
        # Acme (public, steel), Hidden Steel (not public: only staff may see it) and
        # Beta Soft (software): every followed context and the redaction in one mix.
        records = [(w["acme"], 2023), (w["acme"], 2024), (w["hidden"], 2024), (w["beta"], 2024)]
        n = 0
        while True:
            n += 1
            if n % 10 == 0:
                yield "UPDATE companies SET name = %s WHERE id = %s", [f"Acme Steel {n}", w["acme"]]
            else:
                company, year = random.choice(records)
                yield (
                    "UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1"
                    " WHERE company_id = %s AND year = %s",
                    [company, year],
                )

    def _run(self) -> None:
        statements = self._statements()
        conn = None
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.database_url, autocommit=True, connect_timeout=2)
                conn.execute(*next(statements))
                self.committed += 1
            except psycopg.Error as exc:
                self.failed += 1
                if len(self.errors) < 20:
                    self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
                self.stop_event.wait(0.1)
            self.stop_event.wait(self.interval)
        if conn is not None:
            conn.close()


# -- the change log -----------------------------------------------------------------------


def log_head(database_url: str) -> int:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        row = conn.execute("SELECT head_seq FROM change_log_state WHERE id = 1").fetchone()
    # The row is created on first use (changes.publisher.change_log_state_ensure).
    return row[0] if row else 0


def wait_until_published(database_url: str, timeout: float = 30) -> None:
    """Until the publisher has published every captured change."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        while True:
            pending = conn.execute(
                "SELECT count(*) FROM data_changes WHERE processed_at IS NULL"
            ).fetchone()[0]
            if pending == 0:
                return
            assert time.monotonic() < deadline, f"{pending} changes still unpublished"
            time.sleep(0.05)


def context_heads(database_url: str, contexts: list[str]) -> dict[str, int]:
    """The last seq published to each context for the public audience."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT context, last_seq FROM context_heads"
            " WHERE audience = 'public' AND context = ANY(%s)",
            [contexts],
        ).fetchall()
    return dict(rows)


def routed_changes(database_url: str, context: str, after: int, through: int) -> list[tuple]:
    """(seq, entity, record id) of every change published to `context` for the public
    audience with seq in (after, through], from the log."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        return conn.execute(
            "SELECT r.seq, d.entity, d.record_id FROM change_routes r"
            " JOIN data_changes d ON d.seq = r.seq"
            " WHERE r.context = %s AND r.seq > %s AND r.seq <= %s AND r.audiences & %s <> 0"
            " ORDER BY r.seq",
            [context, after, through, PUBLIC_BIT],
        ).fetchall()


def exactly_once_problems(routes, client: Follower) -> tuple[list[str], dict]:
    """Everything wrong with what `client` received, compared with the log (`routes`:
    as `routed_changes` without the URL): gaps, duplicates, disorder, changes it should
    not have, changes it never got. Coalescing (PROTOCOL.md: repeated changes of one
    record in one batch become one item with the highest seq) is the only reason a
    logged seq may be absent. Also counts."""
    problems: list[str] = [f"{client.name}: unexpected {m}" for m in client.unexpected]
    counts = {"received": 0, "logged": 0, "coalesced": 0}
    for context in client.contexts:
        batches = client.batches[context]
        received: list[int] = []
        for batch in batches:
            where = f"{client.name} {context} batch prev_seq={batch.prev_seq} to {batch.seq_to}"
            if batch.prev_seq > batch.cursor_before:
                problems.append(f"{where}: gap after cursor {batch.cursor_before}")
            seqs = [item[0] for item in batch.items]
            if seqs != sorted(seqs):
                problems.append(f"{where}: items out of order {seqs}")
            if seqs and (seqs[0] <= batch.cursor_before or seqs[-1] > batch.seq_to):
                problems.append(f"{where}: items {seqs} outside ({batch.cursor_before}, to]")
            received.extend(seqs)
        if len(received) != len(set(received)):
            dupes = sorted({s for s in received if received.count(s) > 1})
            problems.append(f"{client.name} {context}: received twice {dupes[:10]}")
        if received != sorted(received):
            problems.append(f"{client.name} {context}: out of order across batches")
        logged = routes(context, client.start, client.cursors[context])
        logged_seqs = {row[0] for row in logged}
        foreign = sorted(set(received) - logged_seqs)
        if foreign:
            problems.append(f"{client.name} {context}: seqs not in the log {foreign[:10]}")
        got = set(received)
        for seq, entity, record_id in logged:
            if seq in got:
                continue
            batch = next((b for b in batches if b.cursor_before < seq <= b.seq_to), None)
            merged = batch is not None and any(
                s > seq and e == entity and i == str(record_id) for s, e, i in batch.items
            )
            if merged:
                counts["coalesced"] += 1
            else:
                problems.append(f"{client.name} {context}: lost seq {seq} ({entity} {record_id})")
        counts["received"] += len(received)
        counts["logged"] += len(logged)
    return problems, counts


def assert_exactly_once(database_url: str, clients: list[Follower]) -> dict:
    """Every client received every change of its contexts once, in order; the totals."""
    problems: list[str] = []
    totals: dict[str, int] = defaultdict(int)
    for client in clients:
        found, counts = exactly_once_problems(
            functools.partial(routed_changes, database_url), client
        )
        problems.extend(found)
        for key, value in counts.items():
            totals[key] += value
    assert problems == [], "\n".join(problems[:40])
    assert totals["received"] > 0, "the clients received nothing"
    return dict(totals)


def summary(values: list[float]) -> dict:
    """min / median / max, rounded to milliseconds."""
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


# -- one fault, start to end --------------------------------------------------------------


@dataclass
class FaultRun:
    """What happened around one fault: the clients, the writer, the fault's own times
    and the figures to report."""

    clients: list[Follower]
    writer: Writer
    fault: dict
    figures: dict


async def run_through_fault(
    *,
    stack,
    database_url: str,
    world: dict,
    contexts: list[str],
    fault,
    websockets: int = 4,
    sse: int = 1,
    steady_s: float = 2.0,
    after_s: float = 2.0,
    recovery_timeout: float = 30.0,
    rate: float = 50,
    seconds: float = 100,
) -> FaultRun:
    """Clients follow `contexts` while a writer commits; `await fault(clients)` breaks something
    and brings it back, returning `t_fault` and `t_back` (monotonic), and how to tell the
    first batch after recovery: `greeted_after` (on a new connection) or `min_seq`. Then
    writing goes on for `after_s`, stops, everything is published, every client catches
    up to the heads, and what each received is checked against the log."""
    start = await asyncio.to_thread(log_head, database_url)
    clients = followers(stack, contexts, start, websockets=websockets, sse=sse, seconds=seconds)
    writer = Writer(database_url, world, rate=rate, seconds=seconds)
    async with Following(clients) as following:
        await following.all_greeted()
        writer.start()
        try:
            # The publisher may still be starting: live first, then `steady_s` of it.
            await following.all_received_after(time.monotonic())
            steady = time.monotonic()
            await asyncio.sleep(steady_s)
            await following.all_received_after(steady)
            fault_at = dt.datetime.now(dt.UTC)
            info = await fault(clients)
            how = {"greeted_after": info.get("greeted_after", False)}
            how["min_seq"] = info.get("min_seq", 0)
            moment = info["t_fault"] if how["greeted_after"] else info["t_back"]
            await following.all_received_after(moment, timeout=recovery_timeout, **how)
            await asyncio.sleep(after_s)
        finally:
            await asyncio.to_thread(writer.stop)
        await asyncio.to_thread(wait_until_published, database_url)
        heads = await asyncio.to_thread(context_heads, database_url, contexts)
        await following.all_caught_up(heads)
    totals = await asyncio.to_thread(assert_exactly_once, database_url, clients)
    firsts = [c.first_batch_after(moment, **how) for c in clients]
    saw: dict[str, int] = defaultdict(int)
    for client in clients:
        for at, outcome in client.closes:
            if info["t_fault"] <= at <= max(firsts):
                saw[f"{type(client).__name__}: {outcome}"] += 1
    figures = {
        # Wall clock, to find the fault in the processes' logs.
        "fault_at": fault_at.isoformat(timespec="milliseconds"),
        "recovery_s": summary([t - info["t_fault"] for t in firsts]),
        "after_back_s": summary([t - info["t_back"] for t in firsts]),
        "down_s": round(info["t_back"] - info["t_fault"], 3),
        "clients": {"websocket": websockets, "sse": sse},
        "failed_reconnects": sum(c.failed_attempts for c in clients),
        "writes": {"committed": writer.committed, "failed": writer.failed},
        **totals,
        "client_saw": dict(saw),
    }
    return FaultRun(clients, writer, info, figures)
