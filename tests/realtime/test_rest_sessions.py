"""The REST requests that act on an open session, on the real ASGI application,
PostgreSQL and Redis: `POST /api/realtime/subscribe` adds contexts to an SSE session
and tells its stream, `POST /api/updates/acknowledge` records what it has seen;
whose session each may touch, refused bodies, CSRF for browsers signed in by session."""

import asyncio
import json
import uuid

import pytest
from channels.layers import get_channel_layer
from django.test import AsyncClient

from tests.realtime.rest_endpoints import (
    ACKNOWLEDGE,
    SUBSCRIBE,
    connection_row,
    make_user,
    open_session,
    state,
    token,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


# -- subscribe -------------------------------------------------------------------------


async def test_subscribe_adds_contexts_and_tells_the_stream(http, published):
    session = await open_session(contexts=["overview"])
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(f"session.{session}", channel)
    try:
        response = await http.post(
            SUBSCRIBE,
            json={
                "session": session,
                "contexts": [
                    "industry:steel",
                    f"company:{published['hidden']}",
                    "company:nope",
                    "system",
                    "industry:steel",
                    "",
                ],
            },
        )
        assert response.status_code == 200, response.text
        head = (await state()).head_seq
        assert response.json() == {
            "type": "subscribed",
            "contexts": ["overview", "industry:steel"],
            "rejected": [
                {"context": f"company:{published['hidden']}", "code": "forbidden_context"},
                {"context": "company:nope", "code": "invalid_context"},
                {"context": "", "code": "invalid_context"},
            ],
            "seq": head,
        }
        message = await asyncio.wait_for(layer.receive(channel), 5)
        assert message == {
            "type": "session.subscribe",
            "contexts": ["industry:steel"],
            "since": head,
        }
    finally:
        await layer.group_discard(f"session.{session}", channel)
    row = await connection_row(session)
    assert row.contexts == ["overview", "industry:steel"]
    assert row.dashboard_context == "overview"


async def test_subscribe_with_a_staff_token(http, published):
    user, key = await make_user("ops", staff=True)
    session = await open_session(user=user)
    response = await http.post(
        SUBSCRIBE,
        json={"session": session, "contexts": [f"company:{published['hidden']}"]},
        headers=token(key),
    )
    assert response.status_code == 200
    assert response.json()["contexts"] == [f"company:{published['hidden']}"]


async def test_subscribe_to_someone_elses_session_is_404(http, published):
    owner, owner_key = await make_user("owner")
    _other, other_key = await make_user("other")
    session = await open_session(user=owner)
    body = {"session": session, "contexts": ["overview"]}
    for headers in ({}, token(other_key)):
        response = await http.post(SUBSCRIBE, json=body, headers=headers)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    anonymous = await open_session()
    signed_in = await http.post(
        SUBSCRIBE, json={"session": anonymous, "contexts": ["overview"]}, headers=token(owner_key)
    )
    assert signed_in.status_code == 404
    assert (await http.post(SUBSCRIBE, json=body, headers=token(owner_key))).status_code == 200


async def test_subscribe_unknown_session_is_404(http, published):
    for session in (uuid.uuid4().hex, "x" * 32, "../../etc", "a b"):
        response = await http.post(SUBSCRIBE, json={"session": session, "contexts": ["overview"]})
        assert response.status_code == 404, session
    # A NUL byte is not even a string DRF accepts.
    response = await http.post(SUBSCRIBE, json={"session": "\u0000", "contexts": ["overview"]})
    assert response.status_code == 400


async def test_subscribe_refuses_websocket_sessions(http, published):
    session = await open_session(transport="websocket")
    response = await http.post(SUBSCRIBE, json={"session": session, "contexts": ["overview"]})
    assert response.status_code == 400


async def test_subscribe_too_many_contexts(http, published, settings):
    settings.REALTIME_MAX_SUBSCRIPTIONS = 2
    session = await open_session(contexts=["overview", "companies"])
    response = await http.post(SUBSCRIBE, json={"session": session, "contexts": ["industry:steel"]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_subscriptions"
    assert (await connection_row(session)).contexts == ["overview", "companies"]


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"{not json", 400),
        (b"", 400),
        (b"[]", 400),
        (b'"text"', 400),
        (b"null", 400),
        (b'{"session": 5, "contexts": []}', 400),
        (b'{"session": "abc", "contexts": "overview"}', 400),
        (b'{"session": "abc", "contexts": [1, 2]}', 400),
        (b'{"session": "abc", "contexts": [null]}', 400),
        (b'{"session": "abc", "contexts": {"a": 1}}', 400),
        (b'{"session": "abc"}', 400),
        (b'{"contexts": []}', 400),
        (b'{"session": "abc", "contexts": [], "extra": 1}', 400),
        (b'{"session": "' + b"s" * 100 + b'", "contexts": []}', 400),
        (b'{"session": "abc", "contexts": [NaN]}', 400),
        (b"\xff\xfe", 400),
    ],
)
async def test_subscribe_malformed_bodies_are_400(http, published, content, status):
    response = await http.post(
        SUBSCRIBE, content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] in ("malformed_request", "invalid_request")


async def test_subscribe_oversize_body_is_413(http, published):
    session = await open_session()
    body = {"session": session, "contexts": ["overview"] * 10_000}
    response = await http.post(SUBSCRIBE, json=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    huge = await http.post(
        SUBSCRIBE,
        content=b"{" + b" " * 3_000_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert huge.status_code == 413


async def test_subscribe_other_content_types_are_415(http, published):
    response = await http.post(SUBSCRIBE, data={"session": "abc", "contexts": "overview"})
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


async def test_subscribe_get_is_405(http, published):
    response = await http.get(SUBSCRIBE)
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


async def test_csrf_is_enforced_for_session_signed_in_browsers(published):
    user, _key = await make_user("browser")
    session = await open_session(user=user)
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(user)
    response = await client.post(
        SUBSCRIBE,
        {"session": session, "contexts": ["overview"]},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    acknowledged = await client.post(
        ACKNOWLEDGE, {"session": session, "seq": 0}, content_type="application/json"
    )
    assert acknowledged.status_code == 403


# -- acknowledge -----------------------------------------------------------------------


async def test_acknowledge_records_the_highest_seq(http, published):
    session = await open_session()
    head = (await state()).head_seq
    response = await http.post(ACKNOWLEDGE, json={"session": session, "seq": head})
    assert response.status_code == 204 and response.content == b""
    assert (await connection_row(session)).last_ack_seq == head
    lower = await http.post(ACKNOWLEDGE, json={"session": session, "seq": 1})
    assert lower.status_code == 204
    assert (await connection_row(session)).last_ack_seq == head


async def test_acknowledge_above_the_head_is_400(http, published):
    session = await open_session()
    head = (await state()).head_seq
    response = await http.post(ACKNOWLEDGE, json={"session": session, "seq": head + 1})
    assert response.status_code == 400
    assert (await connection_row(session)).last_ack_seq == 0


async def test_acknowledge_an_unknown_notification_is_404_and_a_malformed_id_400(http, published):
    session = await open_session()
    unknown = await http.post(
        ACKNOWLEDGE, json={"session": session, "notification": str(uuid.uuid4())}
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    malformed = await http.post(ACKNOWLEDGE, json={"session": session, "notification": "n-1"})
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "invalid_request"


async def test_acknowledge_someone_elses_or_an_unknown_session_is_404(http, published):
    owner, _ = await make_user("owner")
    session = await open_session(user=owner)
    assert (await http.post(ACKNOWLEDGE, json={"session": session, "seq": 0})).status_code == 404
    unknown = await http.post(ACKNOWLEDGE, json={"session": uuid.uuid4().hex, "seq": 0})
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"session": "s", "seq": True},
        {"session": "s", "seq": "5"},
        {"session": "s", "seq": 1.0},
        {"session": "s", "seq": -1},
        {"session": "s", "seq": 2**64},
        {"session": "s", "seq": None},
        {"session": "s", "notification": 5},
        {"session": "s", "notification": "n" * 500},
        {"session": "s", "seq": 1, "notification": "n"},
        {"session": "s"},
        {"seq": 1},
        {"session": ["s"], "seq": 1},
        {"session": "s", "seq": 1, "ref": 1},
        [1, 2],
        "ack",
    ],
)
async def test_acknowledge_malformed_bodies_are_400(http, published, body):
    response = await http.post(ACKNOWLEDGE, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request"


async def test_acknowledge_malformed_json_and_oversize(http, published):
    broken = await http.post(
        ACKNOWLEDGE, content=b'{"session": ', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == "malformed_request"
    padded = json.dumps({"session": "s", "seq": 1, "pad": "x" * 70_000}).encode()
    big = await http.post(ACKNOWLEDGE, content=padded, headers={"Content-Type": "application/json"})
    assert big.status_code == 413
