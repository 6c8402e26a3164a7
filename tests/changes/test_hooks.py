"""The publisher's extension points (changes/hooks.py): what the apps above register runs
in its place in the batch, and a failure does what the module says."""

import asyncio
import logging

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from changes import hooks
from changes.publisher import change_batch_publish
from changes.services import publish_fan_out_schedule
from realtime.groups import context_group
from tests.helpers import sql

pytestmark = pytest.mark.django_db


def test_the_apps_register_their_hooks_at_start_up():
    assert {"notifications.ranking", "adminpanel.maintenance"} <= set(hooks._batch_read)
    assert "notifications" in hooks._batch_write
    assert "adminpanel.maintenance" in hooks._frames_filters
    assert {"adminpanel.metrics", "emissions.benchmarks"} <= set(hooks._after_batch)
    assert hooks._after_fan_out["notifications"].__module__ == "realtime.notification_delivery"
    assert "adminpanel.metrics" in hooks._idle
    [sender] = hooks._sender
    assert sender.__module__ == "realtime.broadcast"


def test_read_and_write_hooks_see_the_batch_and_leave_their_results(world, monkeypatch):
    seen = {}

    def read(batch):
        # Before the batch moves anything: nothing of it is logged yet.
        seen["unprocessed"] = sql("SELECT count(*) FROM data_changes WHERE processed_at IS NULL")
        seen["changes"] = len(batch.changes)
        assert batch.now is None
        return "read-result"

    def write(batch):
        seen["read_result"] = batch.extras["test.read"]
        seen["logged"] = sql(
            "SELECT count(*) FROM data_changes WHERE processed_at IS NOT NULL AND seq IS NOT NULL"
        )
        assert batch.now is not None
        return {"written": True}

    monkeypatch.setitem(hooks._batch_read, "test.read", read)
    monkeypatch.setitem(hooks._batch_write, "test.write", write)
    result = change_batch_publish()
    assert seen["changes"] == result.changes == 7
    assert seen["unprocessed"] == [(7,)]
    assert seen["read_result"] == "read-result"
    assert seen["logged"][0][0] >= 7  # the changes and the aggregates the batch made
    assert result.extras["test.read"] == "read-result"
    assert result.extras["test.write"] == {"written": True}


def test_a_hook_that_fails_inside_the_transaction_rolls_the_batch_back(world, monkeypatch):
    def write(batch):
        raise RuntimeError("hook failed")

    monkeypatch.setitem(hooks._batch_write, "test.write", write)
    with pytest.raises(RuntimeError, match="hook failed"):
        change_batch_publish()
    assert sql("SELECT count(*) FROM data_changes WHERE processed_at IS NULL") == [(7,)]
    monkeypatch.delitem(hooks._batch_write, "test.write")
    assert change_batch_publish().changes == 7  # the next run publishes them


def test_frames_filters_decide_what_goes_out(world, monkeypatch):
    """On the real channel layer: a filter that keeps the overview's frames only."""
    monkeypatch.setitem(
        hooks._frames_filters,
        "test.overview-only",
        lambda result, frames: [f for f in frames if f.context == "overview"],
    )

    async def fan_out() -> tuple:
        layer = get_channel_layer()
        overview, steel = await layer.new_channel(), await layer.new_channel()
        await layer.group_add(context_group("overview", "public"), overview)
        await layer.group_add(context_group("industry:steel", "public"), steel)
        try:
            result = await publish_fan_out_schedule()
            received = await asyncio.wait_for(layer.receive(overview), 5)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(layer.receive(steel), 0.5)
        finally:
            await layer.group_discard(context_group("overview", "public"), overview)
            await layer.group_discard(context_group("industry:steel", "public"), steel)
        return result, received

    result, received = async_to_sync(fan_out)()
    assert {f.context for f in result.frames} > {"overview"}  # more was published
    assert received["context"] == "overview"


def test_a_failing_after_batch_hook_is_logged_and_the_others_run(world, monkeypatch, caplog):
    ran = []

    def broken(result, sent_frames):
        raise RuntimeError("metrics away")

    monkeypatch.setitem(hooks._after_batch, "test.broken", broken)
    monkeypatch.setitem(hooks._after_batch, "test.next", lambda r, n: ran.append((r.changes, n)))
    with caplog.at_level(logging.ERROR, logger="changes.hooks"):
        result = async_to_sync(publish_fan_out_schedule)()
    assert ran == [(7, len(result.frames))]
    assert "after-batch hook 'test.broken' failed" in caplog.text


def test_frames_without_a_registered_sender_are_an_error_not_a_silent_loss(world, monkeypatch):
    monkeypatch.setattr(hooks, "_sender", [])
    with pytest.raises(RuntimeError, match="no frames sender is registered"):
        async_to_sync(publish_fan_out_schedule)()
