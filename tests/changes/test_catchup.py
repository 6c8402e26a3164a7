"""Catch-up from per-context cursors, resets, retention, timestamps, EXPLAIN."""

import datetime as dt

import pytest
from django.db import connection

from changes.publisher import change_batch_publish
from changes.selectors import change_log_state, changes_since, seq_at
from changes.services import change_log_prune, change_log_reset
from tests.helpers import sql

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(world):
    change_batch_publish()
    for step in range(5):
        sql(
            "UPDATE emission_records SET scope1_tonnes = scope1_tonnes + %s WHERE year = 2024",
            [step + 1],
        )
        change_batch_publish()
    return world


def live_items(contexts, audience="staff"):
    """Every item of these contexts, read one page at a time from cursor 0."""
    cursors = dict.fromkeys(contexts, 0)
    items = []
    while True:
        page = changes_since(cursors=cursors, audience=audience, limit=4)
        assert not page.resets
        items.extend(page.items)
        cursors = page.cursors
        if not page.has_more:
            return items, cursors


def test_catch_up_returns_every_item_once_in_seq_order(published):
    contexts = [f"company:{published['acme']}", "industry:steel", "overview"]
    items, cursors = live_items(contexts)
    assert [i["seq"] for i in items] == sorted(i["seq"] for i in items)
    keys = [(i["seq"], i["context"]) for i in items]
    assert len(keys) == len(set(keys))
    head = change_log_state().head_seq
    assert cursors == dict.fromkeys(contexts, head)
    everything = changes_since(cursors=dict.fromkeys(contexts, 0), audience="staff", limit=10_000)
    assert [(i["seq"], i["context"]) for i in everything.items] == keys


def test_a_page_never_splits_one_seq(published):
    contexts = [f"company:{published['acme']}", "industry:steel"]
    page = changes_since(cursors=dict.fromkeys(contexts, 0), audience="staff", limit=1)
    seqs = {item["seq"] for item in page.items}
    assert len(seqs) == 1
    assert {item["context"] for item in page.items} == set(contexts)
    assert page.has_more
    assert set(page.cursors.values()) == seqs


def test_catch_up_from_any_cursor_continues_exactly(published):
    context = "industry:steel"
    all_items = changes_since(cursors={context: 0}, audience="public", limit=10_000).items
    for cut in range(len(all_items)):
        cursor = all_items[cut]["seq"]
        rest = changes_since(cursors={context: cursor}, audience="public", limit=10_000).items
        assert rest == [item for item in all_items if item["seq"] > cursor]


def test_public_catch_up_hides_what_the_public_may_not_see(published):
    items = changes_since(
        cursors={"industry:steel": 0, f"company:{published['hidden']}": 0},
        audience="public",
        limit=10_000,
    ).items
    assert all(str(published["hidden"]) not in str(item) for item in items)


def test_resets(published):
    state = change_log_state()
    ahead = changes_since(cursors={"overview": state.head_seq + 5}, audience="public", limit=10)
    assert [(r.context, r.reason) for r in ahead.resets] == [("overview", "cursor_invalid")]
    wrong_epoch = changes_since(cursors={"overview": 1}, audience="public", limit=10, epoch="x")
    assert wrong_epoch.resets[0].reason == "epoch_changed"
    assert wrong_epoch.cursors == {"overview": state.head_seq}


def test_too_many_changes(published, settings):
    settings.CATCHUP_MAX_CHANGES = 3
    page = changes_since(cursors={"industry:steel": 0}, audience="staff", limit=10)
    assert page.resets[0].reason == "too_many_changes"
    assert page.cursors["industry:steel"] == change_log_state().head_seq


def test_pruning_then_an_old_cursor_gets_cursor_too_old(published):
    head = change_log_state().head_seq
    sql(
        "UPDATE data_changes SET processed_at = processed_at - interval '30 days' WHERE seq < %s",
        [head - 3],
    )
    deleted = change_log_prune(older_than=dt.timedelta(days=7), batch=2)
    assert deleted > 0
    state = change_log_state()
    assert state.pruned_through_seq == head - 4
    old = changes_since(cursors={"industry:steel": 1}, audience="staff", limit=10)
    assert old.resets[0].reason == "cursor_too_old"
    recent = changes_since(cursors={"industry:steel": head - 4}, audience="staff", limit=10)
    assert not recent.resets
    assert sql("SELECT count(*) FROM change_routes WHERE seq <= %s", [head - 4]) == [(0,)]


def test_reset_starts_a_new_epoch(published):
    before = change_log_state()
    epoch = change_log_reset(reason="test")
    after = change_log_state()
    assert epoch == after.epoch != before.epoch
    assert after.pruned_through_seq >= before.head_seq
    page = changes_since(
        cursors={"overview": before.head_seq}, audience="public", limit=10, epoch=before.epoch
    )
    assert page.resets[0].reason == "epoch_changed"


def test_reset_head_is_the_last_seq_handed_out(published):
    """On a used sequence the new epoch starts at its last value; the next change is the
    one after it, and a cursor at the head reads it (no reset)."""
    [(last, called)] = sql("SELECT last_value, is_called FROM data_changes_seq_seq")
    assert called
    change_log_reset(reason="test")
    state = change_log_state()
    assert state.head_seq == state.pruned_through_seq == last
    sql("UPDATE companies SET name = 'Acme Reset' WHERE id = %s", [published["acme"]])
    change_batch_publish()
    page = changes_since(cursors={"industry:steel": last}, audience="public", limit=10)
    assert not page.resets
    assert [item["seq"] for item in page.items] == [last + 1]
    stale = changes_since(cursors={"industry:steel": last - 1}, audience="public", limit=10)
    assert stale.resets[0].reason == "cursor_too_old"


def test_timestamp_cursor(published):
    [(tenth,)] = sql("SELECT seq FROM data_changes ORDER BY seq OFFSET 9 LIMIT 1")
    sql("UPDATE data_changes SET processed_at = '2026-01-01T00:00:00Z' WHERE seq <= %s", [tenth])
    assert seq_at(dt.datetime(2025, 12, 31, tzinfo=dt.UTC)) == 0
    assert seq_at(dt.datetime(2026, 1, 1, 0, 0, 1, tzinfo=dt.UTC)) == tenth
    assert seq_at(dt.datetime(2100, 1, 1, tzinfo=dt.UTC)) == change_log_state().head_seq


def test_catch_up_is_an_index_range_scan(published):
    """EXPLAIN of the hot catch-up query: the (context, seq) primary key, no seq scan."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # tiny tables: force the real plan
        cursor.execute(
            "EXPLAIN SELECT seq FROM change_routes WHERE context = 'industry:steel'"
            " AND seq > 5 AND seq <= 1000 AND audiences & 1 <> 0 ORDER BY seq LIMIT 501"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index" in plan and "change_routes_pkey" in plan
    assert "Seq Scan" not in plan and "Sort" not in plan
