"""End to end over the real web server (config/serve.py) and publisher, with `websockets`
clients."""

import asyncio
import json
import random
import threading
import time
from collections import defaultdict

import psycopg
import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers import sql
from tests.live.conftest import database_url_of_tests

pytestmark = [pytest.mark.timeout(180), pytest.mark.asyncio]

adb = database_sync_to_async(sql)


async def recv(ws, kind: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if message["type"] == kind:
            return message


async def test_raw_sql_write_reaches_a_subscribed_client(live_stack, world):
    async with connect(live_stack.ws_url) as ws:
        hello = await recv(ws, "hello")
        await ws.send(json.dumps({"type": "subscribe", "contexts": ["industry:steel"]}))
        subscribed = await recv(ws, "subscribed")
        assert subscribed["contexts"] == ["industry:steel"]
        await adb("UPDATE companies SET name = 'Live Steel' WHERE id = %s", [world["acme"]])
        batch = await recv_change(ws, "name", "Live Steel")
        assert batch["seq_to"] > hello["seq"]


async def recv_change(ws, field: str, value, timeout: float = 10) -> dict:
    """The first batch with an item whose `field` became `value`."""
    deadline = time.monotonic() + timeout
    while True:
        batch = await recv(ws, "batch", deadline - time.monotonic())
        if any(item["fields"].get(field) == value for item in batch["changes"]):
            return batch


def continuous_writes(stop: threading.Event, company, errors: list) -> int:
    count = 0
    try:
        with psycopg.connect(database_url_of_tests(), autocommit=True) as conn:
            while not stop.is_set():
                conn.execute(
                    "UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1"
                    " WHERE company_id = %s AND year = %s",
                    [company, random.choice([2023, 2024])],
                )
                count += 1
                time.sleep(0.003)
    except Exception as exc:
        errors.append(exc)
    return count


async def resuming_client(url: str, contexts: list[str], rounds: int, received: dict) -> None:
    """Connect, follow for a while, drop, reconnect with the cursors: again and again."""
    cursors: dict[str, int] = {}
    for _ in range(rounds):
        async with connect(url) as ws:
            hello = await recv(ws, "hello")
            since = cursors or hello["seq"]
            await ws.send(json.dumps({"type": "subscribe", "contexts": contexts, "since": since}))
            await recv(ws, "subscribed")
            deadline = time.monotonic() + random.uniform(0.2, 0.6)
            while time.monotonic() < deadline:
                try:
                    raw = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
                except TimeoutError:
                    break
                message = json.loads(raw)
                if message["type"] == "reset":
                    raise AssertionError(f"unexpected reset {message}")
                if message["type"] != "batch":
                    continue
                context = message["context"]
                if context in cursors:
                    # The end-to-end check of PROTOCOL.md: never a prev_seq above the cursor.
                    assert message["prev_seq"] <= cursors[context], (message, cursors)
                received[context].extend(item["seq"] for item in message["changes"])
                cursors[context] = message["seq_to"]


async def test_resume_under_continuous_writes_loses_and_repeats_nothing(live_stack, world):
    """Clients that keep dropping and resuming from their cursors while a writer commits
    without pause receive every change of every context exactly once, in order."""
    contexts = [f"company:{world['acme']}", "industry:steel", "overview"]
    stop, errors = threading.Event(), []
    writer = threading.Thread(target=continuous_writes, args=(stop, world["acme"], errors))
    writer.start()
    clients = [defaultdict(list) for _ in range(4)]
    try:
        await asyncio.gather(
            *(resuming_client(live_stack.ws_url, contexts, 6, received) for received in clients)
        )
    finally:
        stop.set()
        writer.join()
    assert errors == []
    await asyncio.sleep(0.5)  # let the publisher finish the last batch

    for received in clients:
        for context in contexts:
            seqs = received[context]
            assert seqs == sorted(seqs), context
            assert len(seqs) == len(set(seqs)), context
        # Everything published for the company between the first and the last seq the
        # client saw is there: compare with the log.
        company = received[contexts[0]]
        assert company, "the client saw no change at all"
        expected = [
            row[0]
            for row in await adb(
                "SELECT seq FROM change_routes WHERE context = %s AND seq BETWEEN %s AND %s"
                " AND audiences & 1 <> 0 ORDER BY seq",
                [contexts[0], company[0], company[-1]],
            )
        ]
        # Coalescing may merge several changes of one record into its last seq, so the
        # client's seqs are a subset of the log's, and nothing after a seq it saw is
        # missing unless it was merged into a later item of the same frame.
        assert set(company) <= set(expected)
        assert company[-1] == expected[-1]


async def test_sigterm_closes_clients_with_4503_and_exits_quickly(live_stack, world):
    async with connect(live_stack.ws_url) as ws:
        await recv(ws, "hello")
        await ws.send(json.dumps({"type": "subscribe", "contexts": ["overview"]}))
        await recv(ws, "subscribed")
        took = await asyncio.to_thread(live_stack.stop, "web")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4503
    assert took < 5


async def test_hostile_client_does_not_disturb_another(live_stack, world):
    async with (
        connect(live_stack.ws_url) as calm,
        connect(live_stack.ws_url, max_size=None) as hostile,
    ):
        await recv(calm, "hello")
        await calm.send(json.dumps({"type": "subscribe", "contexts": ["industry:steel"]}))
        await recv(calm, "subscribed")
        await recv(hostile, "hello")
        await hostile.send(b"\x00binary")
        assert (await recv(hostile, "error"))["code"] == "invalid_message"
        for junk in ("nope", "[]", '{"type": 1}', '{"type": "subscribe", "contexts": 3}'):
            await hostile.send(junk)
        with pytest.raises(ConnectionClosed) as closed:
            # The server may close (1009) while the frame is still being sent: then the
            # send itself raises.
            await hostile.send("x" * (2 * 1024 * 1024))
            while True:
                await asyncio.wait_for(hostile.recv(), 5)
        assert closed.value.rcvd.code == 1009
        await adb("UPDATE companies SET name = 'Undisturbed' WHERE id = %s", [world["acme"]])
        await recv_change(calm, "name", "Undisturbed")
