"""The WebSocket endpoint's protocol with Channels' communicator on the real ASGI
application: hello, subscribe, live and catch-up batches, resets, pause and resume,
ping, the minimum interval, system messages."""

import pytest
from channels.db import database_sync_to_async

from changes.selectors import change_log_state
from tests.realtime.conftest import db, greeted, publish, receive_until, subscribe

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def test_hello_first(world):
    communicator, hello = await greeted()
    state = await database_sync_to_async(change_log_state)()
    assert hello["type"] == "hello"
    assert hello["epoch"] == state.epoch and hello["seq"] == state.head_seq
    assert set(hello["policy"]) >= {"min_interval_ms", "debounce_ms", "max_batch"}
    assert hello["session"] and hello["server_time"].endswith("Z")
    await communicator.disconnect()


async def test_subscribe_reports_active_and_rejected_contexts(client, world):
    reply = await subscribe(
        client,
        [
            "industry:steel",
            f"company:{world['acme']}",
            f"company:{world['hidden']}",
            "company:not-a-uuid",
            "industry:nope",
            "overview",
            "system",
        ],
        ref=7,
    )
    assert reply["ref"] == 7
    assert reply["contexts"] == ["industry:steel", f"company:{world['acme']}", "overview"]
    assert reply["rejected"] == [
        {"context": f"company:{world['hidden']}", "code": "forbidden_context"},
        {"context": "company:not-a-uuid", "code": "invalid_context"},
        {"context": "industry:nope", "code": "forbidden_context"},
    ]
    assert reply["paused"] is False


async def test_live_batch_after_commit(client, world):
    await publish()
    await subscribe(client, ["industry:steel"])
    await db(
        "UPDATE emission_records SET scope1_tonnes = 300 WHERE company_id = %s AND year = 2024",
        [world["acme"]],
    )
    await publish()
    batch = await receive_until(client, "batch")
    assert batch["context"] == "industry:steel"
    record = next(item for item in batch["changes"] if item["entity"] == "emission_record")
    assert record["fields"]["scope1_tonnes"] == 300.0
    assert batch["prev_seq"] < batch["seq_from"] <= batch["seq_to"]


async def test_resume_from_a_cursor_catches_up_then_goes_live(client, world):
    first = await publish()
    cursor = first.seq_to
    for value in (301, 302, 303):
        await db(
            "UPDATE emission_records SET scope1_tonnes = %s WHERE company_id = %s",
            [value, world["acme"]],
        )
        await publish()
    reply = await subscribe(client, [f"company:{world['acme']}"], since=cursor)
    catch_up = await receive_until(client, "batch")
    assert catch_up["prev_seq"] == cursor
    values = [
        i["fields"]["scope1_tonnes"]
        for i in catch_up["changes"]
        if i["entity"] == "emission_record"
    ]
    assert 303.0 in values
    assert catch_up["seq_to"] >= reply["seq"] or catch_up["seq_to"] == reply["seq"]
    await db(
        "UPDATE emission_records SET scope1_tonnes = 304 WHERE company_id = %s", [world["acme"]]
    )
    await publish()
    live = await receive_until(client, "batch")
    assert live["seq_from"] > catch_up["seq_to"]
    assert await client.receive_nothing(timeout=0.2)


async def test_resets(client, world):
    state = await database_sync_to_async(change_log_state)()
    await subscribe(client, ["overview"], since=state.head_seq + 100)
    reset = await receive_until(client, "reset")
    assert reset == {
        "type": "reset",
        "context": "overview",
        "reason": "cursor_invalid",
        "epoch": state.epoch,
        "seq": state.head_seq,
    }
    await subscribe(client, ["industry:steel"], since=0, epoch="another-epoch")
    reset = await receive_until(client, "reset")
    assert reset["reason"] == "epoch_changed" and reset["context"] == "industry:steel"


async def test_pause_stops_batches_and_resume_catches_up(client, world):
    await publish()
    await subscribe(client, [f"company:{world['acme']}"])
    await client.send_json_to({"type": "pause", "ref": "p"})
    paused = await receive_until(client, "subscribed")
    assert paused["paused"] is True and paused["ref"] == "p"
    await db("UPDATE companies SET name = 'Paused Co' WHERE id = %s", [world["acme"]])
    await publish()
    assert await client.receive_nothing(timeout=0.3)
    await client.send_json_to({"type": "resume"})
    resumed = await receive_until(client, "subscribed")
    assert resumed["paused"] is False
    batch = await receive_until(client, "batch")
    assert batch["changes"][0]["fields"]["name"] == "Paused Co"


async def test_unsubscribe(client, world):
    await subscribe(client, ["industry:steel", "overview"])
    await client.send_json_to({"type": "unsubscribe", "contexts": ["overview", "companies"]})
    reply = await receive_until(client, "subscribed")
    assert reply["contexts"] == ["industry:steel"]


async def test_ping_pong(client):
    await client.send_json_to({"type": "ping", "ref": {"n": 1}})
    pong = await receive_until(client, "pong")
    assert pong["ref"] == {"n": 1} and isinstance(pong["seq"], int)


async def test_min_interval_policy_coalesces_instead_of_dropping(world, settings):
    settings.REALTIME_DEFAULT_POLICY = {**settings.REALTIME_DEFAULT_POLICY, "min_interval_ms": 400}
    await publish()
    communicator, hello = await greeted()
    assert hello["policy"]["min_interval_ms"] == 400
    await subscribe(communicator, [f"company:{world['acme']}"])
    for name in ("First", "Second", "Third"):
        await db("UPDATE companies SET name = %s WHERE id = %s", [name, world["acme"]])
        await publish()
    first = await receive_until(communicator, "batch")
    assert first["changes"][0]["fields"]["name"] == "First"
    held = await receive_until(communicator, "batch", timeout=3)
    # The two later changes of the company, held back and merged into one item.
    assert [item["fields"]["name"] for item in held["changes"]] == ["Third"]
    assert held["prev_seq"] == first["seq_to"]
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_system_messages_reach_every_connection_even_paused(client, world):
    from realtime.broadcast import system_message_send

    other, _ = await greeted()
    await other.send_json_to({"type": "pause"})
    await receive_until(other, "subscribed")
    notification = {
        "type": "notification",
        "id": "n1",
        "level": "warning",
        "title": "Data refresh",
        "body": "Benchmarks are being recomputed.",
        "context": None,
        "seq": 0,
        "requires_ack": False,
    }
    await system_message_send(notification)
    await system_message_send(
        {"type": "maintenance", "active": True, "message": "Upgrade", "until": None}
    )
    for communicator in (client, other):
        assert await receive_until(communicator, "notification") == notification
        assert (await receive_until(communicator, "maintenance"))["active"] is True
    with pytest.raises(ValueError):
        await system_message_send({"type": "batch"})
    await other.disconnect()
