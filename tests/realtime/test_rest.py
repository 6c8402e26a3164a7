"""REST endpoints of the live protocol: status, health, subscribe, acknowledge, on the real
ASGI application, PostgreSQL and Redis."""

import asyncio
import json
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.contrib.auth import get_user_model
from django.db import connections
from django.db.utils import load_backend
from django.test import AsyncClient
from rest_framework.authtoken.models import Token

from changes.selectors import change_log_state, publisher_backlog
from realtime import health
from realtime.models import ActiveConnection
from realtime.services import connection_contexts_set, connection_open
from tests.realtime.conftest import db, publish

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

SUBSCRIBE = "/api/realtime/subscribe"
ACKNOWLEDGE = "/api/updates/acknowledge"
STATUS = "/api/updates/status"
HEALTH = "/api/realtime/health"
# Nothing listens here: connections are refused at once.
CLOSED = "127.0.0.1:1"


async def state():
    return await database_sync_to_async(change_log_state)()


async def make_user(username: str, *, staff: bool = False):
    def create():
        user = get_user_model().objects.create_user(username, password="x-pass-1", is_staff=staff)
        return user, Token.objects.create(user=user).key

    return await database_sync_to_async(create)()


async def open_session(*, transport="sse", user=None, contexts=()) -> str:
    session = uuid.uuid4().hex

    def create():
        connection_open(
            session=session,
            transport=transport,
            user=user,
            audience="public",
            client_address="127.0.0.1",
        )
        if contexts:
            connection_contexts_set(session=session, contexts=list(contexts))

    await database_sync_to_async(create)()
    return session


async def connection_row(session: str) -> ActiveConnection:
    return await ActiveConnection.objects.aget(id=session)


def token(key: str) -> dict:
    return {"Authorization": f"Token {key}"}


# -- status --------------------------------------------------------------------------------


async def test_status_reports_the_log_and_the_backlog(http, world):
    body = (await http.get(STATUS)).json()
    assert set(body) == {
        "epoch",
        "head_seq",
        "pending",
        "pending_capped",
        "lag_ms",
        "maintenance",
        "last_published_at",
    }
    [(unprocessed,)] = await db("SELECT count(*) FROM data_changes WHERE processed_at IS NULL")
    assert body["pending"] == unprocessed > 0 and body["pending_capped"] is False
    assert body["lag_ms"] >= 0
    assert body["maintenance"] is False

    await publish()
    body = (await http.get(STATUS)).json()
    log = await state()
    assert body["epoch"] == log.epoch and body["head_seq"] == log.head_seq > 0
    assert body["pending"] == 0 and body["lag_ms"] == 0
    assert body["last_published_at"].endswith("Z")


async def test_status_lag_is_the_age_of_the_oldest_waiting_change(http, published):
    await db("UPDATE companies SET name = 'Waiting' WHERE id = %s", [published["acme"]])
    await db(
        "UPDATE data_changes SET created_at = clock_timestamp() - interval '90 seconds'"
        " WHERE processed_at IS NULL"
    )
    body = (await http.get(STATUS)).json()
    assert body["pending"] == 1
    assert 90_000 <= body["lag_ms"] < 120_000


async def test_pending_is_counted_up_to_the_cap(published):
    await db("UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1")
    backlog = await database_sync_to_async(publisher_backlog)(cap=2)
    assert backlog.pending == 2 and backlog.capped is True


# -- health --------------------------------------------------------------------------------


async def test_health_ok(http, published):
    await open_session(transport="websocket")
    await open_session(transport="sse")
    await open_session(transport="sse")
    response = await http.get(HEALTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    checks = body["checks"]
    assert set(checks) == {"database", "redis", "channel_layer", "publisher"}
    for name in ("database", "redis", "channel_layer"):
        assert checks[name]["ok"] is True and checks[name]["latency_ms"] >= 0
    assert checks["publisher"] == {"ok": True, "lag_ms": 0, "pending": 0}
    assert body["connections"] == {"websocket": 1, "sse": 2, "polling": 0, "total": 3}
    assert response.headers["cache-control"] == "no-store"


async def test_health_is_503_when_the_publisher_lags(http, published):
    await db("UPDATE companies SET name = 'Stuck' WHERE id = %s", [published["acme"]])
    await db(
        "UPDATE data_changes SET created_at = clock_timestamp() - interval '1 minute'"
        " WHERE processed_at IS NULL"
    )
    response = await http.get(HEALTH)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["publisher"]["ok"] is False
    assert body["checks"]["publisher"]["lag_ms"] >= 60_000
    assert body["checks"]["database"]["ok"] is True
    await publish()
    assert (await http.get(HEALTH)).status_code == 200


async def test_health_ignores_credentials(http, published):
    response = await http.get(HEALTH, headers=token("not-a-token"))
    assert response.status_code == 200


async def test_redis_check_fails_on_a_closed_port(published):
    result = await health.redis_check(url=f"redis://{CLOSED}/0", timeout=1)
    assert result["ok"] is False and result["error"]
    assert CLOSED not in json.dumps(result)


async def test_channel_layer_check_fails_on_a_closed_port(published):
    layer = RedisPubSubChannelLayer(hosts=[f"redis://{CLOSED}/0"])
    try:
        result = await health.channel_layer_check(layer=layer, timeout=1)
    finally:
        await layer.flush()
    assert result["ok"] is False and result["error"]


async def test_channel_layer_check_leaves_no_channel_behind(published):
    layer = get_channel_layer()
    assert (await health.channel_layer_check(layer=layer))["ok"] is True
    inner = layer._get_layer()
    assert not [name for name in inner.channels if "health." in name]


async def test_database_check_fails_on_a_closed_port(published):
    settings_dict = {**connections["default"].settings_dict, "HOST": "127.0.0.1", "PORT": 1}
    settings_dict["OPTIONS"] = {
        key: value for key, value in settings_dict["OPTIONS"].items() if key != "pool"
    }
    backend = load_backend(settings_dict["ENGINE"])
    database = backend.DatabaseWrapper(settings_dict, alias="closed-port")
    result = await health.database_check(database=database, timeout=2)
    assert result["ok"] is False and result["error"]
    assert (await health.database_check())["ok"] is True


async def test_check_timeouts(published):
    """A check that takes longer than its timeout is a failure, not a hang."""
    result = await health.redis_check(timeout=0.000001)
    assert result == {"ok": False, "error": "timeout"}


# -- subscribe -----------------------------------------------------------------------------


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


# -- acknowledge ---------------------------------------------------------------------------


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


# -- documentation -------------------------------------------------------------------------


async def test_the_rest_endpoints_are_in_the_openapi_schema(http, published):
    response = await http.get("/api/schema/")
    assert response.status_code == 200
    schema = response.text
    for path in (SUBSCRIBE, ACKNOWLEDGE, STATUS, HEALTH):
        assert f"{path}:" in schema, path
