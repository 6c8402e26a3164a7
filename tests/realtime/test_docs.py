"""docs/protocol.md's examples have the shape of what the real server sends."""

import json
import re
from pathlib import Path

import pytest
from channels.db import database_sync_to_async

from changes.selectors import change_log_state
from tests.realtime.conftest import db, publish, receive, receive_until

pytestmark = pytest.mark.django_db(transaction=True)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
EXAMPLE = re.compile(r"<!-- example: (\w+) -->\s*```json\n(.*?)```", re.S)


def examples() -> dict[str, dict]:
    return {kind: json.loads(body) for kind, body in EXAMPLE.findall(DOC.read_text())}


def shape(value):
    """Keys and value kinds, recursively; numbers are numbers, lists by their items."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def assert_same_shape(documented: dict, real: dict) -> None:
    assert set(documented) == set(real), (sorted(documented), sorted(real))
    for key in documented:
        if key in ("changes", "fields", "previous", "changed", "ref", "rejected"):
            continue  # content-dependent; items are compared one by one below
        assert shape(documented[key]) == shape(real[key]), key


def test_every_message_type_is_documented():
    assert set(examples()) == {
        "hello",
        "subscribed",
        "batch",
        "reset",
        "pong",
        "heartbeat",
        "error",
        "policy",  # checked in tests/preferences/test_live_policy_message.py
        "notification",
        "maintenance",
        "monitor",
    }


@pytest.mark.asyncio
async def test_examples_match_the_server(client, world, settings):
    documented = examples()
    state = await database_sync_to_async(change_log_state)()

    await client.send_json_to({"type": "ping", "ref": 3})
    assert_same_shape(documented["pong"], await receive_until(client, "pong"))

    await publish()
    await client.send_json_to(
        {"type": "subscribe", "contexts": ["industry:steel", "company:not-a-uuid"], "ref": 1}
    )
    subscribed = await receive_until(client, "subscribed")
    assert_same_shape(documented["subscribed"], subscribed)
    assert shape(documented["subscribed"]["rejected"]) == shape(subscribed["rejected"])

    await db(
        "UPDATE emission_records SET scope1_tonnes = 250 WHERE company_id = %s AND year = 2024",
        [world["acme"]],
    )
    await publish()
    batch = await receive_until(client, "batch")
    assert_same_shape(documented["batch"], batch)
    real_items = {item["entity"]: item for item in batch["changes"]}
    for item in documented["batch"]["changes"]:
        real = real_items[item["entity"]]
        assert_same_shape(item, real)
        assert set(item["fields"]) <= set(real["fields"]) | {"scope2_tonnes", "scope3_tonnes"}

    head = (await database_sync_to_async(change_log_state)()).head_seq
    await client.send_json_to({"type": "subscribe", "contexts": ["overview"], "since": head + 9})
    await receive_until(client, "subscribed")
    assert_same_shape(documented["reset"], await receive_until(client, "reset"))

    for _ in range(settings.REALTIME_MESSAGE_RATE + 1):
        await client.send_json_to({"type": "ping"})
    while (message := await receive(client))["type"] != "error":
        assert message["type"] in ("pong", "heartbeat")
    assert message["code"] == "rate_limited"
    assert_same_shape(documented["error"], message)
    assert state.epoch


@pytest.mark.asyncio
async def test_hello_and_heartbeat_examples(world, settings):
    from tests.realtime.conftest import connect

    settings.REALTIME_HEARTBEAT_S = 0.2
    communicator, connected, _ = await connect()
    assert connected
    documented = examples()
    assert_same_shape(documented["hello"], await receive(communicator))
    assert_same_shape(documented["heartbeat"], await receive_until(communicator, "heartbeat"))
    await communicator.disconnect()


@pytest.mark.asyncio
async def test_the_notification_example(client, world):
    from tests.notifications.conftest import publish as publish_with_notifications

    await publish_with_notifications()
    await client.send_json_to({"type": "subscribe", "contexts": [f"company:{world['acme']}"]})
    await receive_until(client, "subscribed")
    await db(
        "UPDATE emission_records SET scope1_tonnes = 400 WHERE company_id = %s AND year = 2024",
        [world["acme"]],
    )
    await publish_with_notifications()
    while (message := await receive(client))["type"] != "notification":
        assert message["type"] in ("batch", "heartbeat")
    documented = examples()["notification"]
    assert_same_shape(documented, message)
    assert documented["kind"] == message["kind"] == "total_move"
