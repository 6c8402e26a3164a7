"""From commit to the channel layer: group messages after commit, gaps repaired."""

import json
import uuid

import pytest
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.conf import settings

from changes.publisher import change_batch_publish, frames_fan_out
from realtime.broadcast import frame_group_message
from realtime.follower import ContextFollower
from realtime.groups import context_group
from tests.helpers import sql

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def db(statement, params=None):
    from channels.db import database_sync_to_async

    return await database_sync_to_async(sql)(statement, params)


async def publish():
    from channels.db import database_sync_to_async

    return await database_sync_to_async(change_batch_publish)()


@pytest.fixture
async def layer():
    layer = get_channel_layer()
    yield layer
    await layer.flush()


async def test_group_member_receives_the_batch_after_commit(layer, world):
    public = await layer.new_channel()
    staff = await layer.new_channel()
    await layer.group_add(context_group("industry:steel", "public"), public)
    await layer.group_add(context_group("industry:steel", "staff"), staff)
    result = await publish()
    await frames_fan_out(result.frames)

    message = await layer.receive(public)
    assert message["type"] == "context.batch"
    frame = json.loads(message["frame"])
    assert frame["type"] == "batch" and frame["context"] == "industry:steel"
    assert frame["prev_seq"] == 0
    names = {item["fields"].get("name") for item in frame["changes"]}
    assert "Acme Steel" in names
    # Nothing about the hidden company reaches the public audience, not even its id.
    assert str(world["hidden"]) not in message["frame"]
    assert "Hidden Steel" not in message["frame"]
    staff_message = await layer.receive(staff)
    assert str(world["hidden"]) in staff_message["frame"]


async def test_follower_repairs_batches_a_full_channel_dropped(world):
    """A RedisChannelLayer channel of capacity 1 drops frames silently; the follower
    notices through prev_seq and still delivers every change once, in order."""
    tiny = RedisChannelLayer(
        hosts=[settings.REDIS_URL], prefix=f"test-{uuid.uuid4().hex[:8]}", capacity=1
    )
    channel = await tiny.new_channel()
    group = context_group(f"company:{world['acme']}", "staff")
    await tiny.group_add(group, channel)
    follower = ContextFollower(audience="staff")
    follower.follow(f"company:{world['acme']}", 0)

    published = []
    for step in range(4):
        if step:
            await db(
                "UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1"
                " WHERE company_id = %s",
                [world["acme"]],
            )
        result = await publish()
        for frame in result.frames:
            if frame.context == f"company:{world['acme']}" and frame.audience == "staff":
                published.extend(frame.message["changes"])
                await tiny.group_send(group, frame_group_message(frame))

    delivered = []
    first = await tiny.receive(channel)
    for frame in await follower.accept(first):
        delivered.extend(json.loads(frame.text)["changes"])
    assert follower.repairs == 0
    # One more batch: its prev_seq shows the three the channel dropped.
    await db("UPDATE companies SET name = 'Acme Steel AG' WHERE id = %s", [world["acme"]])
    result = await publish()
    [frame] = [
        f
        for f in result.frames
        if f.context == f"company:{world['acme']}" and f.audience == "staff"
    ]
    published.extend(frame.message["changes"])
    await tiny.group_send(group, frame_group_message(frame))
    for frame in await follower.accept(await tiny.receive(channel)):
        delivered.extend(json.loads(frame.text)["changes"])

    assert follower.repairs == 1
    seqs = [item["seq"] for item in delivered]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    # The frames the channel dropped were read back from the log (coalesced per record):
    # every record ends at its last published seq with its last published values.
    assert final_state(delivered) == final_state(published)
    await tiny.flush()


def final_state(items):
    """What a client store holds after applying items: per record, last seq and fields."""
    store = {}
    for item in sorted(items, key=lambda item: item["seq"]):
        key = (item["entity"], item["id"])
        fields = {} if item["op"] == "insert" else dict(store.get(key, (0, {}))[1])
        fields.update(json.loads(json.dumps(item["fields"], default=float)))
        store[key] = (item["seq"], fields)
    return store
