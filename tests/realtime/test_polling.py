"""The polling fallback `GET /api/updates/latest/<cursor>` on the real ASGI application,
the real PostgreSQL and the real Redis."""

import asyncio
import datetime as dt
import random
import time
import uuid

import httpx
import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient
from rest_framework.authtoken.models import Token

from changes.selectors import change_log_state, changes_since
from changes.services import change_log_prune
from realtime import polling
from realtime.hub import get_hub
from realtime.services import connection_contexts_set, connection_open
from tests.realtime.conftest import db, make_client, publish

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

LATEST = "/api/updates/latest/"


async def head() -> int:
    return (await database_sync_to_async(change_log_state)()).head_seq


async def poll(http, cursor, headers=None, **params) -> httpx.Response:
    return await http.get(f"{LATEST}{cursor}", params=params, headers=headers or {})


def keys(items):
    return [(item["seq"], item["context"]) for item in items]


async def make_token(username: str, *, staff: bool) -> str:
    def create():
        user = get_user_model().objects.create_user(username, password="x-pass-1", is_staff=staff)
        return Token.objects.create(user=user).key

    return await database_sync_to_async(create)()


# -- answers -----------------------------------------------------------------------------


async def test_poll_returns_the_changes_after_the_cursor(http, published):
    contexts = f"industry:steel,company:{published['acme']}"
    response = await poll(http, 0, contexts=contexts)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    state = await database_sync_to_async(change_log_state)()
    assert set(body) == {
        "epoch",
        "changes",
        "next",
        "has_more",
        "rejected",
        "reset",
        "notifications",
    }
    assert body["epoch"] == state.epoch
    assert body["next"] == state.head_seq and body["has_more"] is False
    assert body["rejected"] == [] and body["reset"] is None
    seqs = [item["seq"] for item in body["changes"]]
    assert seqs == sorted(seqs) and seqs
    assert {item["context"] for item in body["changes"]} == {
        "industry:steel",
        f"company:{published['acme']}",
    }
    # The catch-up selector is the truth: the poll returns exactly its items.
    expected = await database_sync_to_async(changes_since)(
        cursors={"industry:steel": 0, f"company:{published['acme']}": 0},
        audience="public",
        limit=5000,
    )
    assert keys(body["changes"]) == keys(expected.items)


async def test_a_change_in_two_contexts_appears_once_per_context_next_to_each_other(
    http, published
):
    response = await poll(http, 0, contexts=f"company:{published['acme']},industry:steel")
    items = response.json()["changes"]
    both = [seq for seq, _ in keys(items) if keys(items).count((seq, "industry:steel"))]
    assert both
    for index, item in enumerate(items[:-1]):
        following = items[index + 1]
        assert (item["seq"], item["context"]) != (following["seq"], following["context"])
        assert item["seq"] <= following["seq"]


async def test_a_page_never_splits_one_seq(http, published):
    contexts = f"company:{published['acme']},industry:steel"
    body = (await poll(http, 0, contexts=contexts, limit=1)).json()
    assert len(body["changes"]) == 2
    assert {item["context"] for item in body["changes"]} == {
        f"company:{published['acme']}",
        "industry:steel",
    }
    seq = body["changes"][0]["seq"]
    assert {item["seq"] for item in body["changes"]} == {seq}
    assert body["has_more"] is True and body["next"] == seq


async def test_walking_next_returns_every_item_once(http, published):
    for value in (301, 302, 303):
        await db("UPDATE emission_records SET scope1_tonnes = %s WHERE year = 2024", [value])
        await publish()
    contexts = f"company:{published['acme']},industry:steel,overview,companies"
    everything = (await poll(http, 0, contexts=contexts, limit=5000)).json()
    assert not everything["has_more"]
    walked, cursor, pages = [], 0, 0
    while True:
        body = (await poll(http, cursor, contexts=contexts, limit=2)).json()
        assert body["next"] >= cursor
        assert all(item["seq"] > cursor for item in body["changes"])
        assert all(item["seq"] <= body["next"] for item in body["changes"])
        walked.extend(body["changes"])
        cursor, pages = body["next"], pages + 1
        if not body["has_more"]:
            break
    assert pages > 3
    assert keys(walked) == keys(everything["changes"])
    assert len(set(keys(walked))) == len(walked)
    assert cursor == await head()


async def test_nothing_new_jumps_next_to_the_head(http, published):
    await db("UPDATE companies SET name = 'Elsewhere' WHERE id = %s", [published["beta"]])
    await publish()
    state_head = await head()
    cursor = state_head - 1
    body = (await poll(http, cursor, contexts=f"company:{published['acme']}")).json()
    assert body["changes"] == [] and body["next"] == state_head and body["reset"] is None


# -- timestamps --------------------------------------------------------------------------


async def test_timestamp_cursor_on_the_database_clock(http, published):
    await db("UPDATE emission_records SET scope1_tonnes = 777 WHERE year = 2024")
    await publish()
    [(tenth,)] = await db("SELECT seq FROM data_changes ORDER BY seq OFFSET 9 LIMIT 1")
    await db(
        "UPDATE data_changes SET processed_at = '2000-01-01T00:00:00Z' WHERE seq <= %s", [tenth]
    )
    contexts = "industry:steel,industry:software,overview"
    expected = (await poll(http, tenth, contexts=contexts)).json()
    assert expected["changes"]
    for moment in (
        "2000-01-01T00:00:01Z",
        "2000-01-01T01:00:01+01:00",
        "2000-01-01T00:00:01",  # no offset: UTC
        "2000-01-01T00:00:01.000Z",
    ):
        body = (await poll(http, moment, contexts=contexts)).json()
        assert keys(body["changes"]) == keys(expected["changes"]), moment
        assert body["next"] == expected["next"]
    before_everything = (await poll(http, "1999-12-31", contexts=contexts)).json()
    assert keys(before_everything["changes"]) == keys(
        (await poll(http, 0, contexts=contexts)).json()["changes"]
    )
    # An instant ahead of the database's clock is "now": nothing yet, `next` is the head.
    future = (await poll(http, "2999-01-01T00:00:00Z", contexts=contexts)).json()
    assert future["changes"] == [] and future["next"] == await head()
    assert future["reset"] is None


# -- resets ------------------------------------------------------------------------------


async def test_another_epoch_resets_every_context(http, published):
    state = await database_sync_to_async(change_log_state)()
    body = (await poll(http, 1, contexts="industry:steel,overview", epoch="another-epoch")).json()
    assert body["changes"] == [] and body["has_more"] is False
    assert body["next"] == state.head_seq and body["epoch"] == state.epoch
    assert body["reset"] == {
        "reason": "epoch_changed",
        "seq": state.head_seq,
        "contexts": ["industry:steel", "overview"],
    }
    same = (await poll(http, 1, contexts="industry:steel", epoch=state.epoch)).json()
    assert same["reset"] is None and same["changes"]


async def test_cursor_above_the_head_is_cursor_invalid(http, published):
    state_head = await head()
    body = (await poll(http, state_head + 100, contexts="overview")).json()
    assert body["reset"]["reason"] == "cursor_invalid"
    assert body["reset"]["seq"] == state_head == body["next"]
    # Also when every context was refused: the cursor itself cannot be served.
    refused = (await poll(http, state_head + 100, contexts="industry:nope")).json()
    assert refused["reset"]["reason"] == "cursor_invalid"


async def test_a_cursor_below_the_retained_log_is_cursor_too_old(http, published):
    for value in (401, 402, 403):
        await db("UPDATE emission_records SET scope1_tonnes = %s WHERE year = 2024", [value])
        await publish()
    state_head = await head()
    await db(
        "UPDATE data_changes SET processed_at = processed_at - interval '30 days' WHERE seq < %s",
        [state_head - 2],
    )
    await database_sync_to_async(change_log_prune)(older_than=dt.timedelta(days=7), batch=100)
    body = (await poll(http, 1, contexts="industry:steel")).json()
    assert body["reset"]["reason"] == "cursor_too_old"
    assert body["next"] == state_head and body["changes"] == []
    # A timestamp from before the retained log cannot be served either.
    old = (await poll(http, "2000-01-01T00:00:00Z", contexts="industry:steel")).json()
    assert old["reset"]["reason"] == "cursor_too_old"


async def test_too_many_missed_changes(http, published, settings):
    settings.CATCHUP_MAX_CHANGES = 2
    body = (await poll(http, 0, contexts=f"industry:steel,company:{published['beta']}")).json()
    assert body["reset"]["reason"] == "too_many_changes"
    assert "industry:steel" in body["reset"]["contexts"]
    assert body["changes"] == [] and body["next"] == await head()


# -- who sees what -------------------------------------------------------------------------


async def test_bad_and_forbidden_contexts_are_rejected_like_subscribed(http, published):
    body = (
        await poll(
            http,
            0,
            contexts=(
                f"industry:steel,company:{published['hidden']},company:not-a-uuid,"
                "industry:nope,system,overview,industry:steel"
            ),
        )
    ).json()
    assert body["rejected"] == [
        {"context": f"company:{published['hidden']}", "code": "forbidden_context"},
        {"context": "company:not-a-uuid", "code": "invalid_context"},
        {"context": "industry:nope", "code": "forbidden_context"},
    ]
    assert {item["context"] for item in body["changes"]} <= {"industry:steel", "overview"}
    assert str(published["hidden"]) not in str(body["changes"])
    assert "Hidden Steel" not in str(body["changes"])


async def test_staff_token_sees_the_hidden_company(http, published):
    key = await make_token("ops", staff=True)
    context = f"company:{published['hidden']}"
    response = await poll(http, 0, contexts=context, headers={"Authorization": f"Token {key}"})
    body = response.json()
    assert body["rejected"] == []
    assert any(item["fields"].get("name") == "Hidden Steel" for item in body["changes"])
    assert "Authorization" in response.headers["vary"]


async def test_a_signed_in_staff_session_sees_the_hidden_company(published):
    def create():
        return get_user_model().objects.create_user("boss", password="x-pass-1", is_staff=True)

    user = await database_sync_to_async(create)()
    client = AsyncClient()
    await client.aforce_login(user)
    response = await client.get(f"{LATEST}0", {"contexts": f"company:{published['hidden']}"})
    assert response.status_code == 200
    assert response.json()["rejected"] == []


@pytest.mark.parametrize("header", ["Token not-a-token", "Token", "Token a b", "token " + "x" * 80])
async def test_a_bad_token_is_401(http, published, header):
    response = await poll(http, 0, contexts="overview", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert response.headers["www-authenticate"] == "Token"


async def test_another_scheme_is_anonymous_like_drf(http, published):
    response = await poll(http, 0, contexts="overview", headers={"Authorization": "Basic Zm9v"})
    assert response.status_code == 200


async def test_session_parameter_uses_the_sessions_contexts(http, published):
    session = uuid.uuid4().hex

    def open_session():
        connection_open(
            session=session, transport="sse", user=None, audience="public", client_address=None
        )
        connection_contexts_set(session=session, contexts=["industry:steel"])

    await database_sync_to_async(open_session)()
    body = (await poll(http, 0, session=session)).json()
    assert body["changes"] and {i["context"] for i in body["changes"]} == {"industry:steel"}
    # Explicit contexts win over the session's.
    explicit = (await poll(http, 0, session=session, contexts="overview")).json()
    assert {i["context"] for i in explicit["changes"]} == {"overview"}
    missing = await poll(http, 0, session=uuid.uuid4().hex)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    key = await make_token("someone", staff=False)
    foreign = await poll(http, 0, session=session, headers={"Authorization": f"Token {key}"})
    assert foreign.status_code == 404


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cursor",
    [
        "abc",
        "-1",
        "1e9999",
        "x" * 5000,
        "2026-13-45T99:00",
        "99999999999999999999",
        "1.5",
        "%20",
        "0x10",
        "2026-02-30",
        "%FF",
        "0001-01-01T00:00:00+23:59:59",
        "NaN",
        "١٢٣",  # Arabic-Indic digits are digits to Python, not to us
        "5%0A",
        "2026-01-01T00:00:00Z%0A",
    ],
)
async def test_garbage_cursors_are_400(http, published, cursor):
    response = await http.get(f"{LATEST}{cursor}", params={"contexts": "overview"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_parameter"


@pytest.mark.parametrize(
    "params",
    [
        {"contexts": "overview", "limit": "0"},
        {"contexts": "overview", "limit": "5001"},
        {"contexts": "overview", "limit": "abc"},
        {"contexts": "overview", "limit": "1.5"},
        {"contexts": "overview", "limit": "-1"},
        {"contexts": "overview", "limit": ""},
        {"contexts": "overview", "limit": "99999999999999999999"},
        {"contexts": "overview", "wait": "26"},
        {"contexts": "overview", "wait": "25.001"},
        {"contexts": "overview", "wait": "-1"},
        {"contexts": "overview", "wait": "nan"},
        {"contexts": "overview", "wait": "inf"},
        {"contexts": "overview", "wait": "1e3"},
        {"contexts": "overview", "wait": ""},
        {"contexts": "overview", "epoch": "e" * 500},
        {"contexts": "overview", "colour": "blue"},
        {"contexts": "overview", "session": ""},
        {"contexts": ""},
        {"contexts": ",, ,"},
        {},
        {"limit": "5"},
    ],
)
async def test_unparseable_queries_are_400(http, published, params):
    response = await poll(http, 0, **params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_parameter"


async def test_repeated_parameters(http, published):
    twice = await http.get(f"{LATEST}0?contexts=overview&limit=1&limit=2")
    assert twice.status_code == 400
    joined = await http.get(f"{LATEST}0?contexts=overview&contexts=industry:steel")
    assert joined.status_code == 200
    assert {i["context"] for i in joined.json()["changes"]} == {"overview", "industry:steel"}


async def test_too_many_contexts(http, published):
    contexts = ",".join(f"industry:i{n}" for n in range(51))
    response = await poll(http, 0, contexts=contexts)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_subscriptions"


async def test_other_methods_are_405_json(http, published):
    response = await http.post(f"{LATEST}0?contexts=overview", json={})
    assert response.status_code == 405 and response.headers["allow"] == "GET"
    assert response.json()["error"]["code"] == "method_not_allowed"
    response = await http.delete(f"{LATEST}0?contexts=overview")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "url",
    [
        f"{LATEST}%FF?contexts=overview",
        f"{LATEST}0?contexts=%FF%FE",
        f"{LATEST}0?contexts=company:%00",
        f"{LATEST}0?contexts=company:" + "a" * 10000,
        f"{LATEST}0?contexts=overview&limit=%00",
        f"{LATEST}0?contexts=overview&wait=1e309",
        f"{LATEST}0?contexts=overview&epoch=%00",
        f"{LATEST}0?contexts=overview&session=" + "s" * 200,
        f"{LATEST}0?contexts=overview&session=%00",
        f"{LATEST}0?contexts=industry:%E2%80%AE",
        f"{LATEST}0?%00=1",
        f"{LATEST}0?contexts=overview&contexts=" + ",".join(["overview"] * 500),
        f"{LATEST}9223372036854775807?contexts=overview",
        f"{LATEST}9223372036854775808?contexts=overview",
        f"{LATEST}",
        f"{LATEST}0/extra",
    ],
)
async def test_never_a_500(http, published, url):
    response = await http.get(url)
    assert response.status_code < 500, response.text
    assert "error" in response.json() or response.status_code == 200


# -- ETags ---------------------------------------------------------------------------------


async def test_etag_and_304(http, published):
    first = await poll(http, 0, contexts="industry:steel")
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert "no-cache" in first.headers["cache-control"]
    again = await poll(http, 0, contexts="industry:steel")
    assert again.headers["etag"] == etag
    cached = await poll(http, 0, headers={"If-None-Match": etag}, contexts="industry:steel")
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["etag"] == etag
    weak_in_a_list = await poll(
        http, 0, headers={"If-None-Match": f'"nope", W/{etag}'}, contexts="industry:steel"
    )
    assert weak_in_a_list.status_code == 304
    other = await poll(http, 0, headers={"If-None-Match": '"nope"'}, contexts="industry:steel")
    assert other.status_code == 200


async def test_the_etag_covers_the_query_not_only_the_body(http, published):
    """ConditionalGetMiddleware would hash the body alone; ours also covers the query."""
    small = await poll(http, 0, contexts="industry:steel", limit=4000)
    large = await poll(http, 0, contexts="industry:steel", limit=5000)
    assert small.content == large.content
    assert small.headers["etag"] != large.headers["etag"]
    crossed = await poll(
        http, 0, headers={"If-None-Match": small.headers["etag"]}, contexts="industry:steel"
    )
    assert crossed.status_code == 200


async def test_a_new_change_changes_the_etag(http, published):
    first = await poll(http, 0, contexts="industry:steel")
    await db("UPDATE companies SET name = 'Renamed' WHERE id = %s", [published["acme"]])
    await publish()
    second = await poll(
        http, 0, headers={"If-None-Match": first.headers["etag"]}, contexts="industry:steel"
    )
    assert second.status_code == 200
    assert second.headers["etag"] != first.headers["etag"]


async def test_304_after_waiting_in_vain(http, published):
    cursor = await head()
    first = await poll(http, cursor, contexts="industry:steel")
    assert first.json()["changes"] == []
    started = time.monotonic()
    cached = await poll(
        http,
        cursor,
        headers={"If-None-Match": first.headers["etag"]},
        contexts="industry:steel",
        wait="0.6",
    )
    assert cached.status_code == 304
    assert time.monotonic() - started >= 0.55


# -- long polls ----------------------------------------------------------------------------


async def test_long_poll_is_answered_when_a_change_is_published(http, published):
    cursor = await head()
    request = asyncio.create_task(poll(http, cursor, contexts="industry:steel", wait="10"))
    await asyncio.sleep(0.3)
    assert not request.done()
    started = time.monotonic()
    await db("UPDATE companies SET name = 'Woken Steel' WHERE id = %s", [published["acme"]])
    await publish()
    response = await asyncio.wait_for(request, 5)
    assert time.monotonic() - started < 3
    body = response.json()
    assert any(item["fields"].get("name") == "Woken Steel" for item in body["changes"])
    assert body["next"] == await head()
    # The waiter left the hub.
    hub = get_hub()
    assert not any(
        isinstance(member, polling.PollWaiter)
        for members in hub.members.values()
        for member in members
    )


async def test_long_poll_woken_with_if_none_match_still_answers_the_news(http, published):
    cursor = await head()
    empty = await poll(http, cursor, contexts="industry:steel")
    request = asyncio.create_task(
        poll(
            http,
            cursor,
            headers={"If-None-Match": empty.headers["etag"]},
            contexts="industry:steel",
            wait="10",
        )
    )
    await asyncio.sleep(0.3)
    await db("UPDATE companies SET name = 'News' WHERE id = %s", [published["acme"]])
    await publish()
    response = await asyncio.wait_for(request, 5)
    assert response.status_code == 200 and response.json()["changes"]


async def test_long_poll_times_out_empty_with_next_at_the_head(http, published):
    cursor = await head()
    request = asyncio.create_task(
        poll(http, cursor, contexts=f"company:{published['beta']}", wait="1")
    )
    await asyncio.sleep(0.2)
    # Published elsewhere: does not answer this poll, but moves the head.
    await db("UPDATE companies SET name = 'Other News' WHERE id = %s", [published["acme"]])
    await publish()
    started = time.monotonic()
    response = await asyncio.wait_for(request, 5)
    assert time.monotonic() - started > 0.5
    body = response.json()
    assert body["changes"] == [] and body["reset"] is None
    assert body["next"] == await head() > cursor


async def test_long_poll_with_changes_waiting_answers_at_once(http, published):
    started = time.monotonic()
    response = await poll(http, 0, contexts="industry:steel", wait="10")
    assert time.monotonic() - started < 3
    assert response.json()["changes"]


async def test_long_poll_ends_when_the_server_stops(http, published):
    cursor = await head()
    request = asyncio.create_task(poll(http, cursor, contexts="industry:steel", wait="10"))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await get_hub().shutdown()
    response = await asyncio.wait_for(request, 5)
    assert time.monotonic() - started < 3
    assert response.status_code == 200 and response.json()["changes"] == []


# -- rate limit ----------------------------------------------------------------------------


async def test_a_flood_of_polls_gets_429_with_retry_after(published, settings):
    settings.REALTIME_POLL_RATE = "5/minute"
    address = f"192.0.2.{random.randrange(1, 255)}"
    async with make_client(f"{address}") as flooder, make_client() as bystander:
        # A fresh window for this address, whatever an earlier run left in Redis.
        rate = polling.parse_rate(settings.REALTIME_POLL_RATE)
        await polling._poll_limiter().clear(rate, "poll", address)
        statuses = [(await poll(flooder, 0, contexts="overview")).status_code for _ in range(8)]
        assert statuses[:5] == [200] * 5 and statuses[5:] == [429] * 3
        limited = await poll(flooder, 0, contexts="overview")
        assert limited.json()["error"]["code"] == "throttled"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # Another address is not affected.
        assert (await poll(bystander, 0, contexts="overview")).status_code == 200


def test_every_middleware_keeps_the_chain_async():
    """A synchronous-only middleware would hold the process's shared thread around every
    long poll for its whole wait (realtime/handlers.py): every one must be async capable."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    for path in settings.MIDDLEWARE:
        assert getattr(import_string(path), "async_capable", False), path
