"""Notifications of significant changes on every transport: delivered to the sessions that
follow the context and may see it, retried after reconnects until acknowledged, attempts
counted (Channels communicators, httpx on the ASGI application, PostgreSQL, Redis)."""

import uuid

import pytest
from channels.db import database_sync_to_async

from notifications.models import NotificationReceipt
from notifications.publishing import batch_notifications
from tests.notifications.conftest import (
    anonymous_cookie,
    auth,
    live,
    make_user,
    notification_row,
    publish,
    receipts,
)
from tests.realtime.conftest import db, make_client
from tests.realtime.sse_stream import Stream

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.timeout(60),
]

ACKNOWLEDGE = "/api/updates/acknowledge"
PROTOCOL_FIELDS = {"type", "id", "level", "title", "body", "context", "seq", "requires_ack"}


async def move(world, company: str, scope1: int, year: int = 2024) -> None:
    await db(
        "UPDATE emission_records SET scope1_tonnes = %s WHERE company_id = %s AND year = %s",
        [scope1, world[company], year],
    )


@pytest.fixture
async def ready(world):
    """The world published; its own notifications (new companies) out of the way."""
    await publish()
    await db("DELETE FROM update_notifications")
    return world


async def test_a_significant_change_reaches_its_followers_over_websocket(ready):
    acme = f"company:{ready['acme']}"
    follower = await live(None, acme)
    other = await live(None, f"company:{ready['beta']}")
    bystander = await live()
    try:
        await move(ready, "acme", 290)  # +40 %: a warning
        result = await publish()
        [sent] = batch_notifications(result)
        batch = await follower.until("batch")
        note = await follower.until("notification")
        assert set(note) >= PROTOCOL_FIELDS
        assert note["id"] == sent["id"] and note["level"] == "warning"
        assert note["context"] == acme and note["requires_ack"] is False
        assert note["seq"] == batch["changes"][0]["seq"]
        assert note["kind"] == "total_move" and note["data"]["year"] == 2024
        assert note["title"] == "Acme Steel: 2024 emissions up 40.5%"
        # Only to the sessions that follow the context.
        assert await other.notifications() == []
        assert await bystander.notifications() == []

        found = await receipts(note["id"])
        assert {key: r.attempts for key, r in found.items()} == {f"conn:{follower.session}": 1}
        assert (await notification_row(note["id"])).delivery_attempts == 1
    finally:
        for client in (follower, other, bystander):
            await client.close()


async def test_a_significant_change_reaches_an_sse_stream(ready):
    acme = f"company:{ready['acme']}"
    stream = Stream(f"contexts={acme}")
    hello, _ = await stream.opened()
    try:
        await move(ready, "acme", 400)
        await publish()
        events = await stream.collect()
        kinds = [e["event"] for e in events]
        assert kinds == ["batch", "notification"], kinds
        note = events[1]["message"]
        assert "id" not in events[1]  # only batches carry an SSE id
        assert note["context"] == acme and note["level"] == "critical"
        assert note["requires_ack"] is True
        found = await receipts(note["id"])
        assert [r.attempts for r in found.values()] == [1]
        assert list(found) == [f"conn:{hello['session']}"]
    finally:
        await stream.close()


async def test_a_poll_answer_carries_the_clients_notifications(ready):
    user, key = await make_user("poller")
    acme = f"company:{ready['acme']}"
    [(cursor,)] = await db("SELECT head_seq FROM change_log_state")
    await move(ready, "acme", 290)  # a warning: no acknowledgement needed
    await move(ready, "beta", 500)  # critical, but nobody polls beta
    await publish()
    async with make_client() as http:
        url = f"/api/updates/latest/{cursor}?contexts={acme}"
        headers = {"Authorization": f"Token {key}"}
        body = (await http.get(url, headers=headers)).json()
        assert body["changes"]
        [note] = body["notifications"]
        assert note["context"] == acme and note["level"] == "warning"
        assert set(note) >= PROTOCOL_FIELDS
        # Delivered once: the next poll does not carry it again.
        again = await http.get(
            f"/api/updates/latest/{body['next']}?contexts={acme}", headers=headers
        )
        assert again.json()["notifications"] == []
        # Nobody to remember: a poll without an identity gets none.
        anonymous = (await http.get(url)).json()
        assert anonymous["changes"] and anonymous["notifications"] == []
    found = await receipts(note["id"])
    assert {k: r.attempts for k, r in found.items()} == {f"user:{user.pk}": 1}


async def test_a_poll_carries_a_notification_requiring_ack_until_acknowledged(ready):
    user, key = await make_user("ackpoller")
    acme = f"company:{ready['acme']}"
    await move(ready, "acme", 400)  # critical: requires acknowledgement
    await publish()
    [(cursor,)] = await db("SELECT head_seq FROM change_log_state")
    headers = {"Authorization": f"Token {key}"}
    session = uuid.uuid4().hex

    def open_session():
        from realtime.services import connection_open

        connection_open(
            session=session,
            transport="polling",
            user=user,
            audience="public",
            client_address="10.0.0.1",
        )

    await database_sync_to_async(open_session)()
    async with make_client() as http:
        url = f"/api/updates/latest/{cursor}?contexts={acme}"
        first = (await http.get(url, headers=headers)).json()["notifications"]
        second = (await http.get(url, headers=headers)).json()["notifications"]
        assert [n["id"] for n in first] == [n["id"] for n in second] and len(first) == 1
        assert first[0]["requires_ack"] is True
        acknowledged = await http.post(
            ACKNOWLEDGE, json={"session": session, "notification": first[0]["id"]}, headers=headers
        )
        assert acknowledged.status_code == 204
        assert (await http.get(url, headers=headers)).json()["notifications"] == []
    [receipt] = (await receipts(first[0]["id"])).values()
    assert receipt.attempts == 2 and receipt.acknowledged_at is not None
    row = await notification_row(first[0]["id"])
    assert row.delivery_attempts == 2 and row.delivered_at == receipt.acknowledged_at


async def test_requires_ack_is_delivered_again_after_reconnect_until_acknowledged(ready):
    user, key = await make_user("returning")
    acme = f"company:{ready['acme']}"
    first = await live(auth(key), acme)
    await move(ready, "acme", 400)
    await publish()
    note = await first.until("notification")
    assert note["requires_ack"] is True
    await first.close()

    # Every reconnect brings it back (for the contexts the client subscribes again)...
    for _ in range(2):
        again = await live(auth(key))
        assert await again.notifications(timeout=0.3) == []  # nothing before the subscribe
        await again.subscribe(acme)
        [redelivered] = await again.notifications()
        assert redelivered == note
        await again.close()
    found = await receipts(note["id"])
    assert found[f"user:{user.pk}"].attempts == 3
    assert found[f"user:{user.pk}"].acknowledged_at is None

    # ...until the client acknowledges it, on any connection.
    last = await live(auth(key), acme)
    [redelivered] = await last.notifications()
    await last.send({"type": "ack", "notification": note["id"], "ref": 7})
    assert await last.quiet() == []  # an ack has no reply
    await last.close()
    after = await live(auth(key), acme)
    assert await after.notifications() == []
    await after.close()
    receipt = (await receipts(note["id"]))[f"user:{user.pk}"]
    assert receipt.attempts == 4 and receipt.acknowledged_at is not None
    row = await notification_row(note["id"])
    assert row.delivered_at == receipt.acknowledged_at and row.delivery_attempts == 4


async def test_an_anonymous_browser_is_remembered_by_its_session_cookie(ready):
    headers = await anonymous_cookie()
    acme = f"company:{ready['acme']}"
    first = await live(headers, acme)
    await move(ready, "acme", 400)
    await publish()
    note = await first.until("notification")
    await first.send({"type": "ack", "seq": note["seq"]})  # ack by seq covers it
    assert await first.quiet() == []
    await first.close()
    again = await live(headers, acme)
    assert await again.notifications() == []
    await again.close()
    cookie = headers[1][1].decode().removeprefix("sessionid=")
    receipt = (await receipts(note["id"]))[f"anon:{cookie}"]
    assert receipt.acknowledged_at is not None


async def test_never_delivered_to_a_session_that_may_not_see_it(ready):
    _, staff_key = await make_user("boss", staff=True)
    _, public_key = await make_user("reader")
    contexts = ("industry:steel", f"company:{ready['acme']}")
    staff = await live(auth(staff_key), *contexts)
    public = await live(auth(public_key), *contexts)
    anonymous = await live(None, *contexts)
    try:
        # A hidden company joins the industry; a public record is rejected (critical).
        await db(
            "INSERT INTO companies (name, country, industry_id, is_public)"
            " VALUES ('Covert Steel', 'DE', %s, false)",
            [ready["steel"]],
        )
        await db(
            "UPDATE emission_records SET verification_status = 'rejected'"
            " WHERE company_id = %s AND year = 2024",
            [ready["acme"]],
        )
        result = await publish()
        assert {d["audience"] for d in batch_notifications(result)} == {"staff"}
        seen = [await staff.until("notification") for _ in batch_notifications(result)]
        assert {n["kind"] for n in seen} == {"new_company", "verification_change"}
        assert await public.notifications() == []
        assert await anonymous.notifications() == []

        # Not on reconnect either, though the rejection requires acknowledgement...
        await public.close()
        public = await live(auth(public_key), *contexts)
        assert await public.notifications() == []
        # ...nor in a poll, nor acknowledgeable.
        [(cursor,)] = await db("SELECT min(seq) - 1 FROM data_changes WHERE seq IS NOT NULL")
        async with make_client() as http:
            body = (
                await http.get(
                    f"/api/updates/latest/{cursor}?contexts=industry:steel",
                    headers={"Authorization": f"Token {public_key}"},
                )
            ).json()
            assert body["notifications"] == []
        rejected = next(n for n in seen if n["kind"] == "verification_change")
        await public.send({"type": "ack", "notification": rejected["id"], "ref": "x"})
        error = await public.until("error")
        assert error == {
            "type": "error",
            "code": "invalid_message",
            "detail": "No such notification.",
            "ref": "x",
        }
        assert not await NotificationReceipt.objects.filter(
            notification_id=rejected["id"], acknowledged_at__isnull=False
        ).aexists()
    finally:
        for client in (staff, public, anonymous):
            await client.close()


@pytest.mark.parametrize(
    "notification, detail",
    [
        ("not-a-uuid", "`notification` is a notification id (a UUID)."),
        (str(uuid.uuid4()), "No such notification."),
        (
            "5B0C6A62-0D3F-4A7E-9B61-2F1D8A2C1E55" * 3,
            "`notification` is a notification id (a UUID).",
        ),
        ("\u0000", "`notification` is a notification id (a UUID)."),
    ],
)
async def test_websocket_ack_of_an_unknown_id_is_an_error(ready, notification, detail):
    client = await live()
    try:
        await client.send({"type": "ack", "notification": notification, "ref": 1})
        error = await client.until("error")
        assert error == {"type": "error", "code": "invalid_message", "detail": detail, "ref": 1}
        await client.send({"type": "ping"})
        assert (await client.until("pong"))["type"] == "pong"  # the connection goes on
    finally:
        await client.close()
    assert not await NotificationReceipt.objects.aexists()


async def test_rest_acknowledge_errors_change_nothing(ready):
    _, key = await make_user("acker")
    _, staff_key = await make_user("chief", staff=True)
    headers = {"Authorization": f"Token {key}"}
    staff_client = await live(auth(staff_key), f"company:{ready['hidden']}")
    client = await live(auth(key))
    try:
        await move(ready, "hidden", 5000)  # staff only
        await publish()
        staff_only = await staff_client.until("notification")
        async with make_client() as http:
            for notification, status, code in (
                ("n-1", 400, "invalid_request"),
                (str(uuid.uuid4()), 404, "not_found"),
                (staff_only["id"], 404, "not_found"),
            ):
                response = await http.post(
                    ACKNOWLEDGE,
                    json={"session": client.session, "notification": notification},
                    headers=headers,
                )
                assert response.status_code == status, response.text
                assert response.json()["error"]["code"] == code
            # A session that is not yours is 404 before the notification is looked at.
            foreign = await http.post(
                ACKNOWLEDGE,
                json={"session": staff_client.session, "notification": staff_only["id"]},
                headers=headers,
            )
            assert foreign.status_code == 404
        found = await receipts(staff_only["id"])
        assert all(r.acknowledged_at is None for r in found.values())
        assert (await notification_row(staff_only["id"])).delivered_at is None
    finally:
        await staff_client.close()
        await client.close()


async def test_acknowledging_twice_keeps_the_first_moment(ready):
    _, key = await make_user("twice")
    client = await live(auth(key), f"company:{ready['acme']}")
    try:
        await move(ready, "acme", 400)
        await publish()
        note = await client.until("notification")
        await client.send({"type": "ack", "notification": note["id"]})
        await client.send({"type": "ping"})
        await client.until("pong")
        first = (await notification_row(note["id"])).delivered_at
        await client.send({"type": "ack", "notification": note["id"].upper()})
        await client.send({"type": "ping"})
        await client.until("pong")
        assert (await notification_row(note["id"])).delivered_at == first is not None
    finally:
        await client.close()
    assert [
        (k[:5], r.acknowledged_at is not None) for k, r in (await receipts(note["id"])).items()
    ] == [("user:", True)]


async def test_rows_of_the_raw_sql_path_match_the_frames(ready):
    """The raw-SQL publisher path: the stored row and the frame say the same."""
    client = await live(None, f"company:{ready['acme']}")
    try:
        await move(ready, "acme", 400)
        await publish()
        note = await client.until("notification")
    finally:
        await client.close()
    [(kind, level, title, body, context, seq, ack)] = await db(
        "SELECT notification_type, level, title, body, context, seq, requires_ack"
        " FROM update_notifications WHERE id = %s",
        [note["id"]],
    )
    assert (kind, level, title, body, context, seq, ack) == (
        note["kind"],
        note["level"],
        note["title"],
        note["body"],
        note["context"],
        note["seq"],
        note["requires_ack"],
    )


async def test_a_change_notification_never_sent_to_a_client_is_not_sent_on_connect(ready):
    """Retries are for what a client was sent; a change its snapshot already shows is no
    news to a client that connects later (announcements are: see test_broadcast)."""
    _, key = await make_user("latecomer")
    acme = f"company:{ready['acme']}"
    await move(ready, "acme", 400)  # critical, requires acknowledgement
    result = await publish()
    assert [d["requires_ack"] for d in batch_notifications(result)] == [True]
    for headers in (auth(key), None):
        client = await live(headers, acme)
        assert await client.notifications() == []
        await client.close()
