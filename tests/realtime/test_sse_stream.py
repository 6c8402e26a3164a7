"""The SSE endpoint `GET /api/stream/dashboard` on the real ASGI application: catch-up
then live batches, which events carry an id, heartbeats, contexts added by
`session.subscribe`, system messages."""

import time

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from changes.selectors import change_log_state
from realtime import sse, sse_codec
from tests.realtime.conftest import db, publish
from tests.realtime.sse_stream import Stream, company

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("layer_prefix"),
]


async def test_event_order_catch_up_then_live(world):
    first = await publish()
    await db(
        "UPDATE emission_records SET scope1_tonnes = 301 WHERE company_id = %s AND year = 2024",
        [world["acme"]],
    )
    await publish()
    acme = company(world, "acme")
    query = (
        f"contexts={acme},{company(world, 'hidden')},company:not-a-uuid,industry:steel"
        f"&since={first.seq_to}&unknown=ignored"
    )
    stream = Stream(query)
    hello, subscribed = await stream.opened()
    state = await database_sync_to_async(change_log_state)()
    assert hello["epoch"] == state.epoch and hello["transport"] == "sse"
    assert hello["policy"]["heartbeat_ms"] == 15_000
    assert subscribed["contexts"] == [acme, "industry:steel"]
    assert subscribed["rejected"] == [
        {"context": company(world, "hidden"), "code": "forbidden_context"},
        {"context": "company:not-a-uuid", "code": "invalid_context"},
    ]

    catch_up = [await stream.until("batch"), await stream.until("batch")]
    assert [e["message"]["context"] for e in catch_up] == [acme, "industry:steel"]
    for event in catch_up:
        assert event["message"]["prev_seq"] == first.seq_to
        assert any(
            item["fields"].get("scope1_tonnes") == 301.0 for item in event["message"]["changes"]
        )
        assert event["id"]

    await db("UPDATE companies SET name = 'Live Acme' WHERE id = %s", [world["acme"]])
    await publish()
    live = await stream.collect()
    assert {e["message"]["context"] for e in live} == {acme, "industry:steel"}
    for event in live:
        assert event["event"] == "batch" and event["id"]
        assert event["message"]["seq_from"] > catch_up[0]["message"]["seq_to"]
        assert any(i["fields"].get("name") == "Live Acme" for i in event["message"]["changes"])
    # The id of the last batch holds both contexts' cursors after it.
    token = sse_codec.cursor_token_decode(live[-1]["id"])
    assert token.cursors == {e["message"]["context"]: e["message"]["seq_to"] for e in live}
    assert token.epoch_prefix == state.epoch[: sse_codec.TOKEN_EPOCH_CHARS]
    await stream.close()


async def test_only_batches_carry_an_id(world):
    await publish()
    stream = Stream(f"contexts={company(world, 'acme')}")
    await stream.opened()
    await db("UPDATE companies SET name = 'Id Co' WHERE id = %s", [world["acme"]])
    await publish()
    events = await stream.collect()
    assert [e["event"] for e in events] == ["batch"]
    text = stream.raw.decode()
    assert text.count("\nid: ") + text.startswith("id: ") == 1
    await stream.close()


async def test_heartbeats_when_idle(world, settings):
    settings.REALTIME_SSE_HEARTBEAT_S = 0.2
    stream = Stream("contexts=overview")
    await stream.opened()
    state = await database_sync_to_async(change_log_state)()
    for _ in range(2):
        started = time.monotonic()
        beat = await stream.event(timeout=2)
        assert beat["event"] == "heartbeat" and "id" not in beat
        assert beat["message"]["seq"] == state.head_seq
        assert beat["message"]["server_time"].endswith("Z")
        assert time.monotonic() - started < 1
    await stream.close()


async def test_session_subscribe_group_message_adds_a_context(world):
    await publish()
    stream = Stream("contexts=overview")
    hello, _ = await stream.opened()
    acme = company(world, "acme")
    await get_channel_layer().group_send(
        sse.session_group(hello["session"]),
        {"type": "session.subscribe", "contexts": [acme, company(world, "hidden")], "ref": 3},
    )
    subscribed = (await stream.until("subscribed"))["message"]
    assert subscribed["contexts"] == ["overview", acme] and subscribed["ref"] == 3
    assert subscribed["rejected"] == [
        {"context": company(world, "hidden"), "code": "forbidden_context"}
    ]
    await db("UPDATE companies SET name = 'Grouped Co' WHERE id = %s", [world["acme"]])
    await publish()
    batches = [e["message"] for e in await stream.collect()]
    acme_batch = next(b for b in batches if b["context"] == acme)
    assert acme_batch["changes"][0]["fields"]["name"] == "Grouped Co"
    # Asking again for a context it follows does not move its cursor: no replay.
    await get_channel_layer().group_send(
        sse.session_group(hello["session"]),
        {"type": "session.subscribe", "contexts": [acme], "since": 0},
    )
    again = [e["message"] for e in await stream.collect()]
    assert [m["type"] for m in again] == ["subscribed"]
    assert again[0]["contexts"] == ["overview", acme]
    await stream.close()


async def test_system_messages_arrive_as_their_own_events(world):
    from realtime.broadcast import system_message_send

    stream = Stream("contexts=overview")
    await stream.opened()
    await system_message_send(
        {"type": "maintenance", "active": True, "message": "Upgrade at 22:00", "until": None}
    )
    event = await stream.until("maintenance")
    assert event["message"]["message"] == "Upgrade at 22:00"
    assert "id" not in event
    await stream.close()
