"""Maintenance mode on the real ASGI application, PostgreSQL and Redis: the switch and its
audit, what existing and new connections get on every transport, and the publisher
holding back non-critical fan-out with nothing lost when maintenance ends."""

import asyncio
import contextlib
import datetime as dt

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone
from django_prometheus.db import metrics

from adminpanel import selectors
from adminpanel.maintenance import maintenance_switch
from adminpanel.models import AuditAction, AuditEntry
from adminpanel.publishing import batch_under_maintenance
from adminpanel.selectors import Maintenance, maintenance_read
from changes.models import AUDIENCE_PUBLIC
from changes.selectors import changes_since
from changes.services import publish_fan_out_schedule
from tests.adminpanel.conftest import auser_with_token, connected, next_of, token_header
from tests.realtime.conftest import ORIGIN, connect, db, make_client, publish, receive

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

switch = database_sync_to_async(maintenance_switch)
STEEL = "industry:steel"


async def audit(action: str) -> list[AuditEntry]:
    return await database_sync_to_async(
        lambda: list(AuditEntry.objects.filter(action=action).order_by("id"))
    )()


async def refused_code(headers=None) -> dict:
    communicator, ok, _ = await connect(headers=headers or [ORIGIN])
    assert ok  # accepted, then told why it is closed
    closed = await communicator.receive_output(timeout=5)
    return closed


async def test_switch_on_tells_open_connections_refuses_new_ones_and_is_audited(world):
    staff, _ = await auser_with_token("operator", staff=True)
    existing = await connected()
    try:
        await switch(actor=staff, active=True, message="Upgrading the database", retry_after=42)
        message = await next_of(existing, "maintenance")
        assert message == {
            "type": "maintenance",
            "active": True,
            "message": "Upgrading the database",
            "until": None,
        }
        assert await refused_code() == {
            "type": "websocket.close",
            "code": 4503,
            "reason": "retry_after=42",
        }
        # The open connection stays and keeps working.
        await existing.send_json_to({"type": "ping", "ref": 1})
        assert (await next_of(existing, "pong"))["ref"] == 1

        await switch(actor=staff, active=False, message="")
        assert (await next_of(existing, "maintenance"))["active"] is False
        fresh = await connected()
        await fresh.disconnect()
    finally:
        await existing.disconnect()

    on, off = await audit(AuditAction.MAINTENANCE_ON), await audit(AuditAction.MAINTENANCE_OFF)
    assert [(e.actor_name, e.target, e.details["message"]) for e in on] == [
        ("operator", "all", "Upgrading the database")
    ]
    assert on[0].details["retry_after"] == 42 and on[0].details["was_active"] is False
    assert [(e.actor_name, e.details["was_active"]) for e in off] == [("operator", True)]


async def test_the_retry_hint_comes_from_until_when_no_retry_after_is_set(world, settings):
    until = timezone.now() + dt.timedelta(seconds=90)
    await switch(actor=None, active=True, message="", until=until)
    closed = await refused_code()
    assert closed["code"] == 4503
    hint = int(closed["reason"].removeprefix("retry_after="))
    assert 1 <= hint <= 90
    assert (await database_sync_to_async(maintenance_read)()).until == until


def test_retry_hint_rules(settings):
    now = timezone.now()
    settings.MAINTENANCE_RETRY_AFTER_S = 60
    settings.MAINTENANCE_RETRY_MAX_S = 300
    assert Maintenance(active=True, retry_after=7).retry_hint(now=now) == 7
    assert Maintenance(active=True).retry_hint(now=now) == 60
    soon = Maintenance(active=True, until=now + dt.timedelta(seconds=12.2))
    assert soon.retry_hint(now=now) == 13
    late = Maintenance(active=True, until=now + dt.timedelta(hours=5))
    assert late.retry_hint(now=now) == 300
    passed = Maintenance(active=True, until=now - dt.timedelta(seconds=5))
    assert passed.retry_hint(now=now) == 60


async def test_staff_are_admitted_during_maintenance_unless_configured_otherwise(world, settings):
    _, key = await auser_with_token("operator", staff=True)
    _, viewer_key = await auser_with_token("viewer")
    await switch(actor=None, active=True, message="Upgrade", retry_after=5)

    staff = await connected([token_header(key)])
    await staff.disconnect()
    assert (await refused_code([token_header(viewer_key)]))["code"] == 4503

    settings.MAINTENANCE_ADMIT_STAFF = False
    assert (await refused_code([token_header(key)]))["code"] == 4503


async def test_sse_and_polling_get_503_with_retry_after_and_status_says_so(world):
    await switch(actor=None, active=True, message="Back soon", retry_after=30)
    async with make_client() as http:
        stream = await http.get("/api/stream/dashboard?contexts=overview")
        assert stream.status_code == 503
        assert stream.headers["retry-after"] == "30"
        assert stream.json() == {"error": {"code": "maintenance", "detail": "Back soon"}}

        poll = await http.get("/api/updates/latest/0?contexts=overview")
        assert poll.status_code == 503
        assert poll.headers["retry-after"] == "30"
        assert poll.json()["error"]["code"] == "maintenance"

        # A bad token is not looked at while maintenance answers first.
        poll = await http.get(
            "/api/updates/latest/0?contexts=overview", headers={"Authorization": "Token nope"}
        )
        assert poll.status_code == 503

        status = await http.get("/api/updates/status")
        assert status.status_code == 200 and status.json()["maintenance"] is True

        await switch(actor=None, active=False)
        poll = await http.get("/api/updates/latest/0?contexts=overview")
        assert poll.status_code == 200
        assert (await http.get("/api/updates/status")).json()["maintenance"] is False


async def test_staff_polls_during_maintenance(world):
    _, key = await auser_with_token("operator", staff=True)
    await switch(actor=None, active=True, message="Upgrade")
    async with make_client() as http:
        poll = await http.get(
            "/api/updates/latest/0?contexts=overview", headers={"Authorization": f"Token {key}"}
        )
    assert poll.status_code == 200


async def _delivered(communicator, context: str, cursor: int, through: int) -> list[dict]:
    """Batches of `context` until its cursor reaches `through`, checking the chain."""
    items = []
    while cursor < through:
        batch = await next_of(communicator, "batch")
        if batch["context"] != context:
            continue
        assert batch["prev_seq"] <= cursor, "a gap reached the client"
        items.extend(item for item in batch["changes"] if item["seq"] > cursor)
        cursor = batch["seq_to"]
    return items


async def _logged(context: str, after: int) -> list[dict]:
    page = await database_sync_to_async(changes_since)(
        cursors={context: after}, audience=AUDIENCE_PUBLIC, limit=10_000
    )
    return page.items


@contextlib.asynccontextmanager
async def following_steel():
    """A WebSocket client subscribed to industry:steel once the world is published; it
    and the seq it starts from. Disconnected at the end."""
    await publish()
    client = await connected()
    try:
        await client.send_json_to({"type": "subscribe", "contexts": [STEEL]})
        start = (await next_of(client, "subscribed"))["seq"]
        yield client, start
    finally:
        await client.disconnect()


async def acme_scope1_set(world, tonnes: int) -> None:
    """Acme's 2024 scope 1, raw SQL: the capture triggers see it as any write."""
    await db(
        "UPDATE emission_records SET scope1_tonnes = %s WHERE company_id = %s AND year = 2024",
        [tonnes, world["acme"]],
    )


def replayed(items: list[dict]) -> dict:
    """What a client holds after applying `items` (PROTOCOL.md: an item applies when its
    seq is above the record's): per record, its seq and latest fields. Catch-up batches
    coalesce several changes of one record into one item, so delivery is compared with
    the log by the state it leaves, as a client sees it."""
    state: dict = {}
    for item in sorted(items, key=lambda item: item["seq"]):
        key = (item["entity"], item["id"])
        seq, fields = state.get(key, (0, {}))
        if item["seq"] > seq:
            state[key] = (item["seq"], {**fields, **item["fields"]})
    return state


async def test_publisher_holds_back_minor_changes_and_nothing_is_lost_when_it_ends(world):
    async with following_steel() as (client, start):
        await switch(actor=None, active=True, message="Upgrade")
        assert (await next_of(client, "maintenance"))["active"] is True

        held = []
        for step in (1, 2, 3):
            await db(
                "UPDATE emission_records SET scope1_tonnes = scope1_tonnes + %s"
                " WHERE company_id = %s AND year = 2024",
                [step, world["acme"]],
            )
            result = await publish_fan_out_schedule()
            assert batch_under_maintenance(result) and result.changes
            held.append(result.seq_to)
        # Committed, not fanned out.
        assert await client.receive_nothing(timeout=0.5)

        await switch(actor=None, active=False)
        assert (await next_of(client, "maintenance"))["active"] is False
        items = await _delivered(client, STEEL, start, held[-1])

    logged = await _logged(STEEL, start)
    assert len([item for item in logged if item["entity"] == "emission_record"]) == 3
    assert replayed(items) == replayed(logged)
    record = next(i for i in items if i["entity"] == "emission_record")
    assert record["fields"]["scope1_tonnes"] == 206  # 200 + 1 + 2 + 3
    assert record["previous"]["scope1_tonnes"] == 200


async def test_critical_changes_still_go_out_during_maintenance_after_what_was_held(world):
    async with following_steel() as (client, start):
        await switch(actor=None, active=True, message="Upgrade")
        await next_of(client, "maintenance")

        await acme_scope1_set(world, 201)
        minor = await publish_fan_out_schedule()
        assert batch_under_maintenance(minor) and minor.frames  # published, held back
        assert await client.receive_nothing(timeout=0.3)

        # A total moving by more than half is critical: it goes out, after the minor one.
        await acme_scope1_set(world, 5000)
        critical = await publish_fan_out_schedule()
        assert batch_under_maintenance(critical)
        items = await _delivered(client, STEEL, start, critical.seq_to)

    assert replayed(items) == replayed(await _logged(STEEL, start))
    # The minor change held back is in what arrived (coalesced or not), then the critical.
    records = [i for i in items if i["entity"] == "emission_record"]
    assert records[0]["previous"]["scope1_tonnes"] == 200
    assert (records[-1]["fields"]["scope1_tonnes"], records[-1]["significance"]) == (
        5000,
        "critical",
    )


async def test_a_switch_that_changes_nothing_is_neither_recorded_nor_announced(world):
    client = await connected()
    try:
        await switch(actor=None, active=False)
        assert await client.receive_nothing(timeout=0.3)
        await switch(actor=None, active=True, message="A")
        await next_of(client, "maintenance")
        await switch(actor=None, active=True, message="A")
        assert await client.receive_nothing(timeout=0.3)
        # A new message while on is announced and recorded.
        await switch(actor=None, active=True, message="B")
        assert (await next_of(client, "maintenance"))["message"] == "B"
    finally:
        await client.disconnect()
    assert len(await audit(AuditAction.MAINTENANCE_ON)) == 2
    assert await audit(AuditAction.MAINTENANCE_OFF) == []


async def test_until_in_the_past_is_refused(world):
    from common.errors import ApplicationError

    with pytest.raises(ApplicationError):
        await switch(actor=None, active=True, until=timezone.now() - dt.timedelta(minutes=1))
    assert not (await database_sync_to_async(maintenance_read)()).active


async def test_a_paused_connection_catches_up_after_maintenance_from_its_cursor(world):
    async with following_steel() as (client, start):
        await client.send_json_to({"type": "pause"})
        await next_of(client, "subscribed")
        await switch(actor=None, active=True, message="Upgrade")
        await next_of(client, "maintenance")  # system messages reach paused connections
        await acme_scope1_set(world, 210)
        result = await publish_fan_out_schedule()
        await switch(actor=None, active=False)
        await next_of(client, "maintenance")
        assert await client.receive_nothing(timeout=0.3)  # paused: nothing yet
        await client.send_json_to({"type": "resume"})
        await next_of(client, "subscribed")
        items = await _delivered(client, STEEL, start, result.seq_to)
    assert replayed(items) == replayed(await _logged(STEEL, start))


async def test_a_new_connection_after_maintenance_ends_is_admitted_at_once(world):
    await switch(actor=None, active=True, message="Upgrade")
    assert (await refused_code())["code"] == 4503
    await switch(actor=None, active=False)
    client = await connected()
    await client.send_json_to({"type": "ping"})
    assert (await receive(client))["type"] == "pong"
    await client.disconnect()


async def test_an_open_sse_stream_stays_and_hears_both_switches(world):
    from tests.realtime.sse_stream import Stream

    stream = Stream("contexts=overview")
    await stream.opened()
    try:
        await switch(actor=None, active=True, message="Upgrade", retry_after=9)
        on = await stream.until("maintenance")
        assert on["message"]["active"] is True and on["message"]["message"] == "Upgrade"
        await switch(actor=None, active=False)
        off = await stream.until("maintenance")
        assert off["message"]["active"] is False
        assert not stream.ended
    finally:
        await stream.close()


async def test_a_stale_maintenance_cache_costs_one_read_however_many_connect_meanwhile():
    """A reconnect storm finds the cache stale every MAINTENANCE_CACHE_S: the connections
    arriving meanwhile share one read instead of queueing one each on the database
    thread; and a switch that lands during the read is not overwritten by it."""
    selectors._cache = None
    before = _queries_executed()
    states = await asyncio.gather(*(selectors.maintenance_current_async() for _ in range(50)))
    assert _queries_executed() - before == 1
    assert {state.active for state in states} == {False}

    selectors._cache = None
    refresh = asyncio.ensure_future(selectors.maintenance_current_async())
    await asyncio.sleep(0)  # the read is on its way
    selectors.maintenance_cache_set(Maintenance(active=True, message="switched meanwhile"))
    assert (await refresh).active is True
    assert selectors._cached().message == "switched meanwhile"


def _queries_executed() -> float:
    return metrics.execute_total.labels("default", "postgresql")._value.get()
