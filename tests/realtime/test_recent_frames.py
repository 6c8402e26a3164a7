"""Catch-ups from the hub's memory: a client back within REALTIME_RECENT_FRAMES_S of its
cursor gets the frames the hub passed on, not a read of the log; anything the memory
does not reach is still read from the log, and both give the same changes."""

import json

import pytest
from channels.db import database_sync_to_async

from changes.selectors import changes_since
from realtime.hub import get_hub
from tests.realtime.conftest import connect, db, publish, receive, receive_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def subscribe(client, contexts, **extra):
    await client.send_json_to({"type": "subscribe", "contexts": contexts, **extra})
    return await receive_until(client, "subscribed")


async def opened():
    client, connected, _ = await connect()
    assert connected
    assert (await receive(client))["type"] == "hello"
    return client


def answers_from_memory() -> int:
    return sum(f.recent_answers for f in get_hub().followers.values())


async def scope1_set(company: int, *values: float) -> list[dict]:
    """One published frame per value: every record of the company gets it."""
    for value in values:
        await db(
            "UPDATE emission_records SET scope1_tonnes = %s WHERE company_id = %s",
            [value, company],
        )
        await publish()


def record_values(batches: list[dict]) -> list[tuple[int, float]]:
    return [
        (item["seq"], item["fields"]["scope1_tonnes"])
        for batch in batches
        for item in batch["changes"]
        if item["entity"] == "emission_record"
    ]


async def test_a_client_back_soon_is_answered_from_memory_with_what_it_missed(world):
    context = f"company:{world['acme']}"
    cursor = (await publish()).seq_to
    watcher = await opened()  # keeps the hub following the context
    await subscribe(watcher, [context], since=cursor)
    await scope1_set(world["acme"], 301, 302, 303)
    live = [await receive_until(watcher, "batch") for _ in range(3)]
    before = answers_from_memory()

    back = await opened()
    await subscribe(back, [context], since=cursor)
    resumed = [await receive_until(back, "batch") for _ in range(3)]

    assert answers_from_memory() == before + 1
    # The first follows the client's cursor (PROTOCOL.md), then the very frames the hub
    # passed on, in order.
    assert resumed[0]["prev_seq"] == cursor
    assert {**resumed[0], "prev_seq": live[0]["prev_seq"]} == live[0]
    assert resumed[1:] == live[1:]
    log = await db_changes(context, cursor)
    assert record_values(resumed) == [
        (item["seq"], item["fields"]["scope1_tonnes"])
        for item in log
        if item["entity"] == "emission_record"
    ]
    assert await back.receive_nothing(timeout=0.3)
    for client in (watcher, back):
        await client.disconnect()


async def test_a_cursor_inside_a_frame_gets_only_what_follows_it(world):
    context = f"company:{world['acme']}"
    cursor = (await publish()).seq_to
    watcher = await opened()
    await subscribe(watcher, [context], since=cursor)
    await scope1_set(world["acme"], 400)  # both records of acme: one frame, two seqs
    frame = await receive_until(watcher, "batch")
    seqs = [item["seq"] for item in frame["changes"] if item["entity"] == "emission_record"]
    assert len(seqs) == 2 and frame["seq_from"] <= seqs[0] < seqs[1] <= frame["seq_to"]

    back = await opened()
    await subscribe(back, [context], since=seqs[0])
    rest = await receive_until(back, "batch")
    assert rest["prev_seq"] == seqs[0]
    assert [item["seq"] for item in rest["changes"]] == [
        item["seq"] for item in frame["changes"] if item["seq"] > seqs[0]
    ]
    assert rest["seq_to"] == frame["seq_to"]
    for client in (watcher, back):
        await client.disconnect()


async def test_what_memory_no_longer_holds_is_read_from_the_log(world, settings):
    context = f"company:{world['acme']}"
    cursor = (await publish()).seq_to
    watcher = await opened()
    await subscribe(watcher, [context], since=cursor)
    await scope1_set(world["acme"], 501)
    first = await watcher.receive_from(timeout=5)
    # Room for one frame of this size (the next one is as long), not for two.
    settings.REALTIME_RECENT_FRAMES_BYTES = len(first) + 8
    await scope1_set(world["acme"], 502)
    live = [json.loads(first), await receive_until(watcher, "batch")]
    before = answers_from_memory()

    back = await opened()
    await subscribe(back, [context], since=cursor)
    caught_up = await receive_until(back, "batch")  # the log's one batch of both
    assert answers_from_memory() == before
    assert caught_up["prev_seq"] == cursor
    assert record_values([caught_up]) == record_values(live[1:])  # coalesced by the log
    assert await back.receive_nothing(timeout=0.3)

    # From the newest frame's start, memory does reach: answered from it.
    again = await opened()
    await subscribe(again, [context], since=live[0]["seq_to"])
    assert await receive_until(again, "batch") == live[1]  # it follows live[0]
    assert answers_from_memory() == before + 1
    for client in (watcher, back, again):
        await client.disconnect()


async def test_memory_is_off_with_a_zero_window(world, settings):
    settings.REALTIME_RECENT_FRAMES_S = 0
    context = f"company:{world['acme']}"
    cursor = (await publish()).seq_to
    watcher = await opened()
    await subscribe(watcher, [context], since=cursor)
    await scope1_set(world["acme"], 601)
    live = await receive_until(watcher, "batch")
    before = answers_from_memory()
    back = await opened()
    await subscribe(back, [context], since=cursor)
    caught_up = await receive_until(back, "batch")
    assert answers_from_memory() == before
    assert record_values([caught_up]) == record_values([live])
    for client in (watcher, back):
        await client.disconnect()


async def db_changes(context: str, after: int) -> list[dict]:
    page = await database_sync_to_async(changes_since)(
        cursors={context: after}, audience="public", limit=1000
    )
    return page.items
