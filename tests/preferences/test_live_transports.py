"""Transports a refresh policy does not allow: refused over WebSocket, SSE and polling,
and an open connection closed when its policy stops allowing it."""

import json

import pytest
from channels.db import database_sync_to_async

from realtime import protocol
from realtime.hub import get_hub
from tests.preferences.conftest import make_user, policy_set, token_header
from tests.preferences.live_policy import (
    ANONYMOUS_METRICS,
    POLICY_DEADLINE_S,
    put_policies_as_staff,
)
from tests.realtime.conftest import connect, greeted, make_client, receive_until
from tests.realtime.sse_stream import Stream

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def test_transports_the_policy_does_not_allow_are_refused(world):
    await database_sync_to_async(policy_set)(
        "anonymous", "directory", allowed_transports=["polling"]
    )
    communicator, connected, _ = await connect()
    assert connected  # accepted, then closed with the reason
    output = await communicator.receive_output(timeout=5)
    assert output == {
        "type": "websocket.close",
        "code": protocol.CLOSE_TRANSPORT_NOT_ALLOWED,
        "reason": "transport_not_allowed",
    }
    await communicator.disconnect()

    stream = Stream("contexts=industry:steel")
    await stream.start()
    assert stream.status == 403
    body = json.loads(await stream.chunk())
    assert body["error"]["code"] == "transport_not_allowed"

    async with make_client() as http:
        response = await http.get("/api/updates/latest/0", params={"contexts": "overview"})
        assert response.status_code == 200
        await database_sync_to_async(policy_set)(
            "anonymous", "directory", allowed_transports=["websocket"]
        )
        response = await http.get("/api/updates/latest/0", params={"contexts": "overview"})
        assert response.status_code == 403
        assert response.json() == {
            "error": {
                "code": "transport_not_allowed",
                "detail": "Your refresh policy does not allow polling.",
            }
        }
        # Other user types keep their transports.
        _, key = await make_user("viewer")
        response = await http.get(
            "/api/updates/latest/0", params={"contexts": "overview"}, headers=token_header(key)
        )
        assert response.status_code == 200


async def test_a_policy_that_stops_allowing_the_transport_closes_the_connection(world):
    communicator, _ = await greeted()
    response = await put_policies_as_staff({**ANONYMOUS_METRICS, "allowed_transports": ["sse"]})
    assert response.status_code == 200
    message = await receive_until(communicator, "policy", timeout=POLICY_DEADLINE_S)
    assert message["policy"]["allowed_transports"] == ["sse"]
    output = await communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close"
    assert output["code"] == protocol.CLOSE_TRANSPORT_NOT_ALLOWED
    # The client's side of the close: the session leaves the process.
    await communicator.disconnect()
    assert not get_hub().sessions
