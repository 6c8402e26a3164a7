"""The WebSocket endpoint with Channels' communicator on the real ASGI application."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from changes.selectors import change_log_state
from tests.realtime.conftest import ORIGIN, connect, db, greeted, publish, receive, receive_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def subscribe(client, contexts, **extra):
    await client.send_json_to({"type": "subscribe", "contexts": contexts, **extra})
    return await receive_until(client, "subscribed")


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


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_message"),
        ("[1, 2]", "invalid_message"),
        ('"text"', "invalid_message"),
        ("{}", "invalid_message"),
        ('{"type": 5}', "invalid_message"),
        ('{"type": "explode"}', "unknown_type"),
        ('{"type": "subscribe"}', "invalid_message"),
        ('{"type": "subscribe", "contexts": "overview"}', "invalid_message"),
        ('{"type": "subscribe", "contexts": [1, 2]}', "invalid_message"),
        ('{"type": "subscribe", "contexts": ["overview"], "since": "x"}', "invalid_message"),
        ('{"type": "subscribe", "contexts": ["overview"], "since": true}', "invalid_message"),
        ('{"type": "subscribe", "contexts": ["overview"], "epoch": 3}', "invalid_message"),
        ('{"type": "resume", "since": [1]}', "invalid_message"),
        ('{"type": "ack"}', "invalid_message"),
        ('{"type": "unsubscribe", "contexts": null}', "invalid_message"),
    ],
)
async def test_malformed_messages_get_errors_and_keep_the_connection(client, frame, code):
    await client.send_to(text_data=frame)
    error = await receive_until(client, "error")
    assert error["code"] == code and error["detail"]
    await client.send_json_to({"type": "ping"})
    assert (await receive_until(client, "pong"))["type"] == "pong"


async def test_binary_frames_are_refused(client):
    await client.send_to(bytes_data=b"\x00\x01")
    assert (await receive_until(client, "error"))["code"] == "invalid_message"


async def test_error_echoes_ref(client):
    await client.send_json_to({"type": "nope", "ref": "r1"})
    assert (await receive_until(client, "error"))["ref"] == "r1"


async def test_oversized_frame_closes_1009(client):
    await client.send_to(text_data=json.dumps({"type": "ping", "pad": "x" * 2_000_000}))
    output = await client.receive_output(timeout=5)
    while output["type"] == "websocket.send":
        output = await client.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": 1009}


async def test_flood_is_rate_limited_then_closed_4429(client, settings):
    limited = 0
    for _ in range(2000):
        await client.send_json_to({"type": "ping"})
    while True:
        output = await client.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            assert output["code"] == 4429
            assert output["reason"].startswith("retry_after=")
            break
        message = json.loads(output["text"])
        if message["type"] == "error":
            assert message["code"] == "rate_limited" and message["retry_after"] > 0
            limited += 1
    assert limited > 0


async def test_the_message_allowance_is_a_burst_that_refills(world, settings):
    settings.REALTIME_MESSAGE_RATE, settings.REALTIME_MESSAGE_WINDOW_S = 3, 1
    client, _ = await greeted()  # its allowance is made with the settings above
    for n in range(3):
        await client.send_json_to({"type": "ping", "ref": n})
        assert (await receive_until(client, "pong"))["ref"] == n
    await client.send_json_to({"type": "ping", "ref": 3})
    refused = await receive_until(client, "error")
    assert refused["code"] == "rate_limited"
    await asyncio.sleep(0.4)  # a third of the window: one message back
    await client.send_json_to({"type": "ping", "ref": 4})
    assert (await receive_until(client, "pong"))["ref"] == 4
    await client.send_json_to({"type": "ping", "ref": 5})
    assert (await receive_until(client, "error"))["code"] == "rate_limited"
    await client.disconnect()


async def test_too_many_subscriptions(client, settings, world):
    settings.REALTIME_MAX_SUBSCRIPTIONS = 2
    await client.send_json_to(
        {"type": "subscribe", "contexts": ["overview", "companies", "industry:steel"], "ref": 1}
    )
    error = await receive_until(client, "error")
    assert error["code"] == "too_many_subscriptions" and error["ref"] == 1


async def test_refused_origin(world):
    _communicator, connected, _ = await connect(headers=[(b"origin", b"http://evil.example")])
    assert not connected


async def test_bad_token_closes_4401(world):
    _communicator, connected, code = await connect(
        headers=[ORIGIN, (b"authorization", b"Token not-a-token")]
    )
    assert not connected and code == 4401


async def test_token_user_in_the_staff_audience_sees_hidden_companies(world):
    def make_token():
        user = get_user_model().objects.create_user("ops", password="x-pass-1", is_staff=True)
        return Token.objects.create(user=user).key

    key = await database_sync_to_async(make_token)()
    communicator, connected, _ = await connect(
        headers=[(b"authorization", f"Token {key}".encode())]  # no Origin: not a browser
    )
    assert connected
    await receive(communicator)
    await publish()
    reply = await subscribe(communicator, [f"company:{world['hidden']}"])
    assert reply["contexts"] == [f"company:{world['hidden']}"]
    await db("UPDATE companies SET name = 'Still Hidden' WHERE id = %s", [world["hidden"]])
    await publish()
    batch = await receive_until(communicator, "batch")
    assert batch["changes"][0]["fields"]["name"] == "Still Hidden"
    await communicator.disconnect()


async def test_anonymous_never_receives_a_hidden_company(client, world):
    await subscribe(client, ["industry:steel", "companies", "overview"], since=0)
    await db("UPDATE companies SET name = 'Secret Rename' WHERE id = %s", [world["hidden"]])
    await db(
        "UPDATE emission_records SET scope1_tonnes = 5 WHERE company_id = %s", [world["hidden"]]
    )
    await db("UPDATE companies SET name = 'Visible Rename' WHERE id = %s", [world["acme"]])
    await publish()
    seen = []
    while not await client.receive_nothing(timeout=0.5):
        text = await client.receive_from()
        seen.append(text)
        assert "Secret Rename" not in text and str(world["hidden"]) not in text
        assert "Hidden Steel" not in text
    assert any("Visible Rename" in text for text in seen)


async def test_another_client_keeps_receiving_while_one_misbehaves(client, world):
    other, _ = await greeted()
    await subscribe(other, ["industry:steel"])
    for _ in range(50):
        await client.send_to(text_data="garbage")
        await client.send_to(bytes_data=b"\xff")
    await db("UPDATE companies SET name = 'Calm Co' WHERE id = %s", [world["acme"]])
    await publish()
    batch = await receive_until(other, "batch")
    assert any(i["fields"].get("name") == "Calm Co" for i in batch["changes"])
    await other.disconnect()


async def test_connections_are_tracked_and_exported(client, world):
    from django.test import AsyncClient

    from realtime.models import ActiveConnection

    await subscribe(client, ["industry:steel", "overview"])
    rows = await database_sync_to_async(
        lambda: list(ActiveConnection.objects.values("transport", "contexts", "dashboard_context"))
    )()
    assert rows == [
        {
            "transport": "websocket",
            "contexts": ["industry:steel", "overview"],
            "dashboard_context": "industry:steel",
        }
    ]
    metrics = (await AsyncClient().get("/metrics")).content.decode()
    assert 'carbon_realtime_process_connections{transport="websocket"} 1.0' in metrics
    assert 'carbon_realtime_connections{transport="websocket"} 1.0' in metrics
    await client.disconnect()
    count = database_sync_to_async(ActiveConnection.objects.count)
    # Rows of ended sessions are deleted in batches (realtime.hub.ROW_RELEASE_BATCH_S).
    for _ in range(50):
        if await count() == 0:
            break
        await asyncio.sleep(0.02)
    assert await count() == 0


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


async def test_a_pinging_client_that_falls_silent_is_closed_4408(world, settings):
    settings.REALTIME_HEARTBEAT_S = 0.2
    settings.REALTIME_CLIENT_TIMEOUT_S = 0.5
    communicator, _ = await greeted()
    await communicator.send_json_to({"type": "ping"})
    while True:
        output = await communicator.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            break
    assert output["code"] == 4408


async def test_a_client_that_never_pings_is_not_closed(world, settings):
    settings.REALTIME_HEARTBEAT_S = 0.1
    settings.REALTIME_CLIENT_TIMEOUT_S = 0.2
    communicator, _ = await greeted()
    for _ in range(5):
        assert (await receive(communicator))["type"] == "heartbeat"
    await communicator.disconnect()


async def test_connections_per_address_are_limited(world, settings):
    from channels.testing import WebsocketCommunicator

    from config.asgi import application

    settings.REALTIME_MAX_CONNECTIONS_PER_ADDRESS = 1

    def from_address():
        communicator = WebsocketCommunicator(application, "/ws/dashboard/updates", [ORIGIN])
        communicator.scope["client"] = ("203.0.113.9", 50000)
        return communicator

    first = from_address()
    assert (await first.connect())[0]
    await receive(first)
    second = from_address()
    connected, _ = await second.connect()
    assert connected  # accepted, then told why it is closed
    closed = await second.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4429, "reason": "retry_after=30"}
    # Refused in the same trip that would have recorded it: only the first has a row.
    rows = await db(
        "SELECT count(*) FROM active_connections WHERE client_address = %s", ["203.0.113.9"]
    )
    assert rows == [(1,)]
    await first.disconnect()


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
