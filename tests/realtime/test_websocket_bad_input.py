"""A WebSocket client that misbehaves: malformed and binary frames get errors and keep
the connection, oversized frames and floods close it, the message allowance refills,
subscriptions are capped, and other clients are not disturbed."""

import asyncio
import json

import pytest

from tests.realtime.conftest import db, greeted, publish, receive_until, subscribe

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


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
        # Too deep for CLIENT_JSON_MAX_DEPTH, under the frame size limit: refused alike on
        # every Python (3.11's parser raised RecursionError here, 3.13's parses it).
        ("[" * 20_000 + "]" * 20_000, "invalid_message"),
        ('{"type": "subscribe", "contexts": ' + "[" * 3000 + "]" * 3000 + "}", "invalid_message"),
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
