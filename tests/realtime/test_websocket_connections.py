"""Who may hold a WebSocket connection and for how long: origin and token checks, what
each audience sees, rows and metrics of open connections, client timeouts, and the
per-address limit."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from tests.realtime.conftest import (
    ORIGIN,
    connect,
    db,
    greeted,
    publish,
    receive,
    receive_until,
    subscribe,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


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
