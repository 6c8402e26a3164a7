"""What the polling fallback `GET /api/updates/latest/<cursor>` answers, on the real
ASGI application, PostgreSQL and Redis: the changes after a seq or a timestamp, pages
that never split a seq, and the resets of a cursor it cannot serve."""

import datetime as dt

import pytest
from channels.db import database_sync_to_async

from changes.selectors import change_log_state, changes_since
from changes.services import change_log_prune
from tests.realtime.conftest import db, publish
from tests.realtime.polling_client import head, poll

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def keys(items):
    return [(item["seq"], item["context"]) for item in items]


# -- answers ---------------------------------------------------------------------------


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


# -- timestamps ------------------------------------------------------------------------


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


# -- resets ----------------------------------------------------------------------------


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
