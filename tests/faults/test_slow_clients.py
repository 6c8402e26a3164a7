"""Clients that stop reading: once their unsent bytes pass REALTIME_MAX_PENDING_BYTES the
server ends them (WebSocket: close 4413 `slow_client`; SSE: the stream ends) and
releases their sessions, while a client on the same context keeps receiving every
change in order; the slow client resumes from its cursor when it comes back."""

import asyncio
import json
import socket
import threading
import time

import httpx
import psycopg
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.faults.test_storm import metric
from tests.helpers import sql
from tests.live.conftest import database_url_of_tests, stack_env, stack_start

pytestmark = [pytest.mark.timeout(180), pytest.mark.asyncio]

PENDING_LIMIT = 256 * 1024
# On a loaded machine the publisher may take longer than the default 15 s to send a
# stalled reader enough to pass the limit; the kernel would then drop it first (its
# receive window shut: tests/faults/test_half_open.py covers that way out). Here the
# pending-bytes bound is what is tested.
UNACKED_TIMEOUT_S = "300"
COMPANIES = 300


def tiny_receive_socket() -> socket.socket:
    """A client socket with the smallest receive buffer: the kernel stops taking the
    server's bytes almost at once when the client does not read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


@pytest.fixture
def bulk_world(transactional_db):
    [(industry,)] = sql(
        "INSERT INTO industries (slug, name, sector) VALUES ('bulk', 'Bulk', 'Tests') RETURNING id"
    )
    sql(
        "INSERT INTO companies (name, country, industry_id, is_public, verification_status)"
        " SELECT 'Bulk ' || n, 'DE', %s, true, 'verified' FROM generate_series(1, %s) n",
        [industry, COMPANIES],
    )
    sql(
        "INSERT INTO emission_records (company_id, year, scope1_tonnes, verification_status)"
        " SELECT id, 2024, 100, 'verified' FROM companies WHERE industry_id = %s",
        [industry],
    )
    return industry


@pytest.fixture
def slow_stack(transactional_db, tmp_path):
    """`slow_stack(**env)`: web server and publisher with the pending-bytes limit under
    test (and `env`); stopped at the end, before the test database is emptied."""
    stacks = []

    def start(**env):
        env = stack_env(
            REALTIME_MAX_PENDING_BYTES=str(PENDING_LIMIT),
            REALTIME_UNACKED_TIMEOUT_S=UNACKED_TIMEOUT_S,
            **env,
        )
        stacks.append(stack_start(("web", "publisher"), env=env, logs=tmp_path))
        return stacks[-1]

    try:
        yield start
    finally:
        for stack in stacks:
            stack.stop_all()


def bulk_writes(stop: threading.Event, industry) -> None:
    """Statements of 300 changes each to the industry, until told to stop (or 60 s)."""
    deadline = time.monotonic() + 60
    with psycopg.connect(database_url_of_tests(), autocommit=True) as conn:
        while not stop.is_set() and time.monotonic() < deadline:
            conn.execute(
                "UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1"
                " WHERE company_id IN (SELECT id FROM companies WHERE industry_id = %s)",
                [industry],
            )
            time.sleep(0.05)


def ended_slow(stack) -> float:
    figures = httpx.get(f"{stack.http_url}/metrics", timeout=5).text
    return metric(figures, 'carbon_realtime_sessions_ended_total{reason="slow_client"}')


def process_connections(stack) -> float:
    figures = httpx.get(f"{stack.http_url}/metrics", timeout=5).text
    return metric(figures, "carbon_realtime_process_connections")


async def wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.2)


@pytest.fixture
def bulk_writer(bulk_world):
    """bulk_writes in a thread once started; `await bulk_writer.stop()` ends it (the
    fixture's end does too, also when the test fails)."""
    writer = BulkWriter(bulk_world)
    yield writer
    writer.stop_event.set()


class BulkWriter:
    def __init__(self, industry):
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=bulk_writes, args=(self.stop_event, industry), daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.to_thread(self.thread.join)


def bulk_head() -> int:
    """The last seq published to industry:bulk for the public audience."""
    [(head,)] = sql(
        "SELECT max(seq) FROM change_routes WHERE context = 'industry:bulk' AND audiences & 1 <> 0"
    )
    return head


def resubscribe(cursor: int) -> str:
    """The subscribe message of a client coming back to industry:bulk at `cursor`."""
    return json.dumps(
        {"type": "subscribe", "contexts": ["industry:bulk"], "since": {"industry:bulk": cursor}}
    )


class Follower:
    """A WebSocket client that reads everything of one context and checks its order."""

    def __init__(self):
        self.cursor = None
        self.gaps = 0
        self.duplicates = 0
        self.batches = 0
        self.task: asyncio.Task | None = None

    async def follow(self, url: str, context: str) -> None:
        """Start reading in a task; return once subscribed."""
        ready = asyncio.Event()
        self.task = asyncio.create_task(self.run(url, context, ready))
        await asyncio.wait_for(ready.wait(), 10)

    async def run(self, url: str, context: str, ready: asyncio.Event) -> None:
        async with connect(url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "subscribe", "contexts": [context]}))
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "subscribed":
                    self.cursor = message["seq"]
                    ready.set()
                elif message["type"] == "batch":
                    self.gaps += message["prev_seq"] > self.cursor
                    self.duplicates += sum(i["seq"] <= self.cursor for i in message["changes"])
                    self.cursor = message["seq_to"]
                    self.batches += 1

    async def reached(self, head: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.cursor < head and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return self.cursor >= head


async def test_a_websocket_client_that_does_not_read_is_cut_off(slow_stack, bulk_writer):
    stack = slow_stack(CATCHUP_MAX_CHANGES="1000000")
    fast = Follower()
    before = await asyncio.to_thread(ended_slow, stack)
    await fast.follow(stack.ws_url, "industry:bulk")

    sock = tiny_receive_socket()
    sock.connect(("127.0.0.1", stack.port))
    # max_queue=1: the client library stops reading the socket as soon as one message
    # waits, so the kernel's small buffer fills and the server's buffer grows.
    slow = await connect(stack.ws_url, sock=sock, max_queue=1, max_size=None)
    await slow.send(json.dumps({"type": "subscribe", "contexts": ["industry:bulk"]}))
    hello = json.loads(await slow.recv())
    subscribed = json.loads(await slow.recv())
    assert (hello["type"], subscribed["type"]) == ("hello", "subscribed")
    cursor = subscribed["seq"]

    bulk_writer.start()
    await wait_for(lambda: ended_slow(stack) > before, timeout=60)
    await bulk_writer.stop()

    # The slow client reads again: what it had, then the close 4413 (or, if it read
    # nothing within the grace, a reset). Its cursor is where its last batch ended.
    closed_with = None
    try:
        async for raw in slow:
            message = json.loads(raw)
            if message["type"] == "batch":
                cursor = message["seq_to"]
    except ConnectionClosed as closed:
        closed_with = closed.rcvd.code if closed.rcvd else None
    assert closed_with in (4413, None)
    if closed_with == 4413:
        assert slow.close_reason == "slow_client"

    # Released on the server: only the fast client remains.
    await wait_for(lambda: process_connections(stack) == 1, timeout=5)

    # It comes back and resumes from its cursor: catch-up, no reset.
    head = await asyncio.to_thread(bulk_head)
    async with connect(stack.ws_url, max_size=None) as back:
        await back.send(resubscribe(cursor))
        resumed = cursor
        while resumed < head:
            message = json.loads(await asyncio.wait_for(back.recv(), 20))
            assert message["type"] != "reset", message
            if message["type"] == "batch":
                assert message["prev_seq"] <= resumed
                resumed = message["seq_to"]

    # The fast client never noticed: everything, in order, up to the head.
    assert await fast.reached(head, timeout=20), (fast.cursor, head)
    assert (fast.gaps, fast.duplicates) == (0, 0)
    fast.task.cancel()


async def test_an_sse_client_that_does_not_read_is_cut_off(slow_stack, bulk_writer):
    stack = slow_stack()
    sock = tiny_receive_socket()
    try:
        before = await asyncio.to_thread(ended_slow, stack)
        sock.connect(("127.0.0.1", stack.port))
        sock.sendall(
            b"GET /api/stream/dashboard?contexts=industry:bulk HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        )
        sock.settimeout(10)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        # From here on the client reads nothing.
        bulk_writer.start()
        await wait_for(lambda: ended_slow(stack) > before, timeout=60)
        await bulk_writer.stop()

        await wait_for(lambda: process_connections(stack) == 0, timeout=5)
        # The stream is gone: reading drains what the kernel had, then the reset.
        with pytest.raises((ConnectionResetError, TimeoutError)):
            while sock.recv(65536):
                pass
    finally:
        sock.close()


@pytest.mark.parametrize("memory", [True, False], ids=["from memory", "from the log"])
async def test_a_slow_link_owed_more_than_the_limit_still_catches_up(
    bulk_world, slow_stack, memory
):
    """A client back after a long absence may be owed more than REALTIME_MAX_PENDING_BYTES.
    Its catch-up goes out as fast as it reads: pushed at once, it would be cut off (4413)
    on every return and never catch up on a slow link."""
    stack = slow_stack(
        REALTIME_SOCKET_SEND_BUFFER_BYTES=str(64 * 1024),
        CATCHUP_MAX_CHANGES="1000000",
        REALTIME_RECENT_FRAMES_S="600" if memory else "0",
        REALTIME_RECENT_FRAMES_BYTES=str(64 << 20),
    )
    before = await asyncio.to_thread(ended_slow, stack)
    # A client following the context keeps the server's hub on it (its memory).
    fast = Follower()
    await fast.follow(stack.ws_url, "industry:bulk")
    cursor = fast.cursor
    with psycopg.connect(database_url_of_tests(), autocommit=True) as conn:
        for _ in range(30):  # 9,000 changes: megabytes of catch-up
            conn.execute(
                "UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1"
                " WHERE company_id IN (SELECT id FROM companies WHERE industry_id = %s)",
                [bulk_world],
            )
    await wait_for(
        lambda: sql("SELECT count(*) FROM data_changes WHERE seq IS NULL")[0][0] == 0,
        timeout=60,
    )
    head = await asyncio.to_thread(bulk_head)
    assert await fast.reached(head, timeout=30), (fast.cursor, head)

    sock = tiny_receive_socket()
    sock.connect(("127.0.0.1", stack.port))
    slow = await connect(stack.ws_url, sock=sock, max_queue=1, max_size=None)
    await slow.send(resubscribe(cursor))
    resumed, received = cursor, 0
    while resumed < head:
        message = json.loads(await asyncio.wait_for(slow.recv(), 30))
        assert message["type"] != "reset", message
        if message["type"] == "batch":
            assert message["prev_seq"] <= resumed < message["seq_to"]
            resumed = message["seq_to"]
            received += len(json.dumps(message))
            await asyncio.sleep(0.05)  # a slow link
    assert received > 3 * PENDING_LIMIT
    assert await asyncio.to_thread(ended_slow, stack) == before
    await slow.close()
    fast.task.cancel()
