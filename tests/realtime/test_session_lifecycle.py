"""One lifecycle per session: whatever ends it (a failed send, a frame that breaks its
delivery, a close), one idempotent path releases everything it holds; and a frame lost
between Redis and the hub is repaired by the head check even when nothing follows it."""

import asyncio
import time

import pytest

from realtime import metrics
from realtime.broadcast import BATCH_MESSAGE_TYPE
from realtime.groups import context_group
from realtime.hub import get_hub
from realtime.session import LiveSession
from tests.realtime.conftest import connect, db, publish, receive, receive_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def rows(session_id: str) -> int:
    [(count,)] = await db("SELECT count(*) FROM active_connections WHERE id = %s", [session_id])
    return count


async def until(predicate, timeout: float = 2.0) -> bool:
    """Whether `predicate` (a function, maybe async) turns true within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return True
        await asyncio.sleep(0.02)
    return False


def held_by(hub, session) -> list:
    """Where the hub still refers to `session`."""
    places = []
    if session in hub.sessions:
        places.append("sessions")
    if session.connection is not None and session.connection in hub.beating:
        places.append("beating")
    if session.connection is not None and session.connection in hub.transports:
        places.append("transports")
    places.extend(key for key, members in hub.members.items() if session in members)
    return places


async def test_a_failed_send_ends_the_session_at_once(world):
    """A send to a client that is gone ends its session there and then: no retry at the
    next heartbeat, nothing kept (memberships, the hub's sets, its row)."""
    sent = []
    gone = asyncio.Event()

    async def send(text: str) -> None:
        if gone.is_set():
            raise ConnectionResetError("the client is gone")
        sent.append(text)

    session = LiveSession(user=None, send=send, transport="sse")
    await session.open()
    await session.subscribe(["industry:steel", f"company:{world['acme']}"])
    hub = session.hub
    assert held_by(hub, session) and await rows(session.id) == 1
    before = metrics.sessions_ended["send_failed"]

    gone.set()
    await db("UPDATE companies SET name = 'Gone Steel' WHERE id = %s", [world["acme"]])
    await publish()  # the hub hands the frame over; the send fails

    assert await until(lambda: session.closed)
    assert held_by(hub, session) == []
    assert metrics.sessions_ended["send_failed"] == before + 1
    assert await until(lambda: rows_zero(session.id))
    # Idempotent: ending or closing again changes nothing, sends are dropped.
    await session.end("error")
    await session.close()
    await session.send("after the end")
    assert metrics.sessions_ended["send_failed"] == before + 1


async def rows_zero(session_id: str) -> bool:
    return await rows(session_id) == 0


async def test_a_frame_that_breaks_delivery_ends_only_that_session(world):
    """A hostile frame on the channel layer that a session cannot handle ends that
    session with 1011 (it reconnects and resumes); the hub and other contexts go on."""
    victim, connected, _ = await connect()
    assert connected
    hello = await receive(victim)
    await victim.send_json_to({"type": "subscribe", "contexts": ["industry:steel"]})
    await receive_until(victim, "subscribed")
    bystander, connected, _ = await connect()
    assert connected
    await receive(bystander)
    await bystander.send_json_to({"type": "subscribe", "contexts": ["industry:software"]})
    await receive_until(bystander, "subscribed")

    hub = get_hub()
    head = hello["seq"]
    # Overlapping the session's cursor, so the session must re-read the (broken) text.
    await hub.layer.group_send(
        context_group("industry:steel", "public"),
        {
            "type": BATCH_MESSAGE_TYPE,
            "context": "industry:steel",
            "audience": "public",
            "seq_from": head,
            "seq_to": head + 1,
            "prev_seq": head,
            "frame": "{not json",
        },
    )
    closed = await victim.receive_output(timeout=5)
    while closed["type"] != "websocket.close":
        closed = await victim.receive_output(timeout=5)
    assert closed["code"] == 1011
    assert await until(lambda: all(s.id != hello["session"] for s in hub.sessions))
    assert await until(lambda: all(key[0] != "industry:steel" for key in hub.members))
    assert await until(lambda: rows_zero(hello["session"]))

    await db("UPDATE companies SET name = 'Still Soft' WHERE id = %s", [world["beta"]])
    await publish()
    names = []
    while "Still Soft" not in names:
        batch = await receive_until(bystander, "batch")
        names = [item["fields"].get("name") for item in batch["changes"]]
    await bystander.disconnect()
    await victim.wait()


async def test_a_lost_frame_is_repaired_without_a_later_frame(world):
    """A frame dropped between Redis and the hub (the hub is out of the group while it is
    published) reaches the client from the log within 2 s, though nothing else is
    published to that context."""
    client, connected, _ = await connect()
    assert connected
    await receive(client)
    context = f"company:{world['acme']}"
    await client.send_json_to({"type": "subscribe", "contexts": [context]})
    await receive_until(client, "subscribed")
    hub = get_hub()
    group = context_group(context, "public")

    await hub.layer.group_discard(group, hub.channel)  # frames of this context are lost
    await db("UPDATE companies SET name = 'Lost Frame' WHERE id = %s", [world["acme"]])
    await publish()
    await asyncio.sleep(0.1)
    await hub.layer.group_add(group, hub.channel)
    started = time.monotonic()

    names = []
    while "Lost Frame" not in names:
        batch = await receive_until(client, "batch", timeout=5)
        names = [item["fields"].get("name") for item in batch["changes"]]
    assert time.monotonic() - started < 2.0
    await client.disconnect()


async def test_a_disconnect_during_a_subscribe_leaves_nothing(world):
    """A client that goes away while its subscribe is under way: the subscribe ends
    without leaving a hub membership, and the row is gone."""
    session = LiveSession(user=None, send=_discard, transport="sse")
    await session.open()
    joined = asyncio.create_task(session.subscribe(["industry:steel", "overview"]))
    await asyncio.sleep(0)
    await session.close()
    await joined
    assert held_by(session.hub, session) == []
    assert await until(lambda: rows_zero(session.id))


async def _discard(text: str) -> None:
    pass


async def test_hostile_ack_seq_is_refused(client):
    """An `ack` whose seq is not a 64-bit seq is refused like any malformed message."""
    for seq in (2**70, -1):
        await client.send_json_to({"type": "ack", "seq": seq})
        error = await receive_until(client, "error")
        assert error["code"] == "invalid_message"
    await client.send_json_to({"type": "ping"})
    assert (await receive_until(client, "pong"))["type"] == "pong"


def _loop_lag_counts() -> dict[str, float]:
    """carbon_event_loop_lag_seconds: observations at or under each bucket bound."""
    samples = metrics.event_loop_lag.collect()[0].samples
    return {s.labels["le"]: s.value for s in samples if s.name.endswith("_bucket")}


async def test_a_blocked_event_loop_shows_in_the_lag_histogram(world):
    """The hub's probe wakes every 50 ms: a loop held for 100 ms makes one wakeup at least
    50 ms late, counted above the 20 ms bound; a free loop's wakeups are counted too."""
    client, connected, _ = await connect()  # starts the hub, and its probe
    assert connected
    await asyncio.sleep(0.3)
    before = _loop_lag_counts()
    time.sleep(0.1)  # what a long callback does to every other task of the process
    await asyncio.sleep(0.3)
    after = _loop_lag_counts()
    late = (after["+Inf"] - after["0.02"]) - (before["+Inf"] - before["0.02"])
    assert late >= 1
    assert after["+Inf"] - before["+Inf"] >= 4
    await client.disconnect()
