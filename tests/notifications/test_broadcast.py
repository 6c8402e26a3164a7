"""`POST /api/admin/updates/broadcast`: staff announcements reach every connected client on
every transport; validated, authorized, rate limited and audited (httpx on the ASGI
application, communicators, PostgreSQL, Redis)."""

import json

import pytest
from django.test import AsyncClient

from adminpanel.models import AuditEntry
from notifications.models import UpdateNotification
from tests.notifications.conftest import anonymous_cookie, auth, live, make_user, receipts
from tests.realtime.conftest import db, make_client
from tests.realtime.sse_stream import Stream

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.timeout(60),
]

BROADCAST = "/api/admin/updates/broadcast"
ANNOUNCEMENT = {"level": "warning", "title": "Maintenance tonight", "body": "From 22:00 UTC."}


@pytest.fixture
async def staff_key(world):
    _, key = await make_user("operator", staff=True)
    return key


def token(key: str) -> dict:
    return {"Authorization": f"Token {key}"}


async def broadcast(body, key: str | None, **kwargs):
    async with make_client() as http:
        return await http.post(BROADCAST, json=body, headers=token(key) if key else {}, **kwargs)


async def test_a_broadcast_reaches_every_connected_client_on_every_transport(world, staff_key):
    _, reader_key = await make_user("reader")
    _, poller_key = await make_user("poller")
    anonymous = await live()
    signed_in = await live(auth(reader_key), "industry:steel")
    browser = await live(await anonymous_cookie(), "overview")
    paused = await live(None, "overview")
    await paused.send({"type": "pause"})
    await paused.until("subscribed")
    stream = Stream("contexts=industry:software")
    await stream.opened()
    try:
        response = await broadcast(ANNOUNCEMENT, staff_key)
        assert response.status_code == 201, response.text
        sent = response.json()
        assert sent["type"] == "notification" and sent["context"] is None
        assert sent["level"] == "warning" and sent["requires_ack"] is False
        assert sent["kind"] == "announcement" and sent["title"] == "Maintenance tonight"
        [(head,)] = await db("SELECT head_seq FROM change_log_state")
        assert sent["seq"] == head

        for client in (anonymous, signed_in, browser, paused):
            assert await client.until("notification") == sent
        events = await stream.collect()
        assert [e["message"] for e in events if e["event"] == "notification"] == [sent]
        # Polls carry it for a while (to clients they can remember).
        async with make_client() as http:
            body = (
                await http.get("/api/updates/latest/0?contexts=overview", headers=token(poller_key))
            ).json()
        assert body["notifications"] == [sent]

        found = await receipts(sent["id"])
        assert len(found) == 6 and all(r.attempts == 1 for r in found.values())
        row = await UpdateNotification.objects.aget(id=sent["id"])
        assert row.delivery_attempts == 6 and row.audience == "public"
        audit = await AuditEntry.objects.select_related("actor").aget()
        assert (audit.action, audit.target, audit.actor_name) == ("broadcast", "all", "operator")
        assert audit.details["notification"] == sent["id"]
    finally:
        for client in (anonymous, signed_in, browser, paused):
            await client.close()
        await stream.close()


async def test_a_broadcast_to_one_context_reaches_its_followers_only(world, staff_key):
    steel = await live(None, "industry:steel")
    software = await live(None, "industry:software")
    try:
        response = await broadcast({**ANNOUNCEMENT, "context": "industry:steel"}, staff_key)
        assert response.status_code == 201
        sent = response.json()
        assert sent["context"] == "industry:steel"
        assert await steel.until("notification") == sent
        assert await software.notifications() == []
        audit = await AuditEntry.objects.aget()
        assert audit.target == "industry:steel"
    finally:
        await steel.close()
        await software.close()


async def test_an_announcement_requiring_ack_reaches_later_clients_until_acknowledged(
    world, staff_key
):
    user, key = await make_user("late")
    response = await broadcast({**ANNOUNCEMENT, "requires_ack": True}, staff_key)
    sent = response.json()
    assert sent["requires_ack"] is True
    # Connected after the broadcast: its first subscribe brings it.
    client = await live(auth(key), "overview")
    assert await client.until("notification") == sent
    async with make_client() as http:
        acknowledged = await http.post(
            "/api/updates/acknowledge",
            json={"session": client.session, "notification": sent["id"]},
            headers=token(key),
        )
        assert acknowledged.status_code == 204
    await client.close()
    again = await live(auth(key), "overview")
    assert await again.notifications() == []
    await again.close()
    receipt = (await receipts(sent["id"]))[f"user:{user.pk}"]
    assert receipt.attempts == 1 and receipt.acknowledged_at is not None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"level": "warning", "title": "t"},
        {**ANNOUNCEMENT, "level": "fatal"},
        {**ANNOUNCEMENT, "level": 1},
        {**ANNOUNCEMENT, "level": ["info"]},
        {**ANNOUNCEMENT, "title": ""},
        {**ANNOUNCEMENT, "title": "   "},
        {**ANNOUNCEMENT, "title": "x" * 121},
        {**ANNOUNCEMENT, "title": 5},
        {**ANNOUNCEMENT, "title": "two\nlines"},
        {**ANNOUNCEMENT, "title": "nul\u0000byte"},
        {**ANNOUNCEMENT, "title": "lone \ud800 surrogate"},
        {**ANNOUNCEMENT, "body": ""},
        {**ANNOUNCEMENT, "body": "b" * 2001},
        {**ANNOUNCEMENT, "body": "escape \u001b[31m red"},
        {**ANNOUNCEMENT, "body": {"html": "<script>"}},
        {**ANNOUNCEMENT, "context": "company:not-a-uuid"},
        {**ANNOUNCEMENT, "context": "company:5b0c6a62-0d3f-4a7e-9b61-2f1d8a2c1e55"},
        {**ANNOUNCEMENT, "context": "industry:nonexistent"},
        {**ANNOUNCEMENT, "context": "system"},
        {**ANNOUNCEMENT, "context": "x" * 500},
        {**ANNOUNCEMENT, "context": 7},
        {**ANNOUNCEMENT, "requires_ack": "yes"},
        {**ANNOUNCEMENT, "requires_ack": 1},
        {**ANNOUNCEMENT, "target_sessions": ["user:1"]},
        [ANNOUNCEMENT],
        "announce",
        None,
    ],
)
async def test_malformed_broadcasts_are_400(world, staff_key, body):
    async with make_client() as http:
        response = await http.post(
            BROADCAST,
            content=json.dumps(body).encode(),
            headers={**token(staff_key), "Content-Type": "application/json"},
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("invalid_request", "invalid_parameter")
    assert not await UpdateNotification.objects.aexists()
    assert not await AuditEntry.objects.aexists()


async def test_hostile_transport_level_bodies(world, staff_key):
    async with make_client() as http:
        broken = await http.post(
            BROADCAST,
            content=b'{"level": ',
            headers={**token(staff_key), "Content-Type": "application/json"},
        )
        assert broken.status_code == 400
        assert broken.json()["error"]["code"] == "malformed_request"
        huge = await http.post(
            BROADCAST,
            content=json.dumps({**ANNOUNCEMENT, "body": "b" * 100_000}).encode(),
            headers={**token(staff_key), "Content-Type": "application/json"},
        )
        assert huge.status_code == 413
        form = await http.post(BROADCAST, data=ANNOUNCEMENT, headers=token(staff_key))
        assert form.status_code == 415
        get = await http.get(BROADCAST, headers=token(staff_key))
        assert get.status_code == 405
    assert not await UpdateNotification.objects.aexists()


async def test_only_staff_may_broadcast(world):
    _, key = await make_user("viewer")
    anonymous = await broadcast(ANNOUNCEMENT, None)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "authentication_required"
    assert anonymous.headers["WWW-Authenticate"] == "Token"
    bad_token = await broadcast(ANNOUNCEMENT, "not-a-key")
    assert bad_token.status_code == 401
    viewer = await broadcast(ANNOUNCEMENT, key)
    assert viewer.status_code == 403
    assert viewer.json()["error"]["code"] == "permission_denied"
    assert not await UpdateNotification.objects.aexists()
    assert not await AuditEntry.objects.aexists()


async def test_session_signed_in_staff_need_the_csrf_token(world):
    user, _ = await make_user("browser-staff", staff=True)
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(user)
    response = await client.post(BROADCAST, ANNOUNCEMENT, content_type="application/json")
    assert response.status_code == 403
    assert not await UpdateNotification.objects.aexists()


async def test_broadcasts_are_rate_limited_per_staff_user(world, staff_key, settings):
    settings.NOTIFY_BROADCAST_RATE = "2/minute"
    _, other_key = await make_user("other-operator", staff=True)
    for _ in range(2):
        assert (await broadcast(ANNOUNCEMENT, staff_key)).status_code == 201
    # Refused bodies do not count; the third valid one does not pass.
    assert (await broadcast({**ANNOUNCEMENT, "level": "x"}, staff_key)).status_code == 400
    limited = await broadcast(ANNOUNCEMENT, staff_key)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "throttled"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # Another operator has a budget of their own.
    assert (await broadcast(ANNOUNCEMENT, other_key)).status_code == 201
    assert await UpdateNotification.objects.acount() == 3
    assert await AuditEntry.objects.acount() == 3


async def test_the_broadcast_endpoint_is_in_the_openapi_schema(world):
    async with make_client() as http:
        schema = (await http.get("/api/schema/", headers={"Accept": "application/json"})).text
    assert "/api/admin/updates/broadcast" in schema
    assert "requires_ack" in schema
