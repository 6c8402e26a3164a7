"""Resuming an SSE stream: the cursor token in event ids, `Last-Event-ID` (and the
polyfills' `lastEventId`) over `since`, and the resets of a token it cannot serve."""

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from changes.selectors import change_log_state
from realtime import sse, sse_codec
from tests.realtime.conftest import db, publish
from tests.realtime.sse_stream import Stream, company, seqs

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("layer_prefix"),
]


# -- pure functions --------------------------------------------------------------------


def test_cursor_token_round_trip():
    cursors = {"company:5b0c6a62-0d3f-4a7e-9b61-2f1d8a2c1e55": 18231, "industry:steel": 7}
    token = sse_codec.cursor_token("0123456789abcdef0123456789abcdef", cursors)
    assert "\n" not in token and len(token) < 120
    decoded = sse_codec.cursor_token_decode(token)
    assert decoded.epoch_prefix == "01234567" and decoded.cursors == cursors


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "1.", "1.!!!", "2.YWJj", "1." + "A" * 9000, "1.YWJjfGluZHVzdHJ5OnN0ZWVsPXg"],
)
def test_undecodable_tokens(token):
    assert sse_codec.cursor_token_decode(token) is None


# -- the stream ------------------------------------------------------------------------


async def test_last_event_id_resumes_every_context_and_wins_over_since(world):
    await publish()
    acme = company(world, "acme")
    query = f"contexts={acme},industry:steel"
    stream = Stream(query)
    await stream.opened()
    await db(
        "UPDATE emission_records SET scope1_tonnes = 401 WHERE company_id = %s AND year = 2024",
        [world["acme"]],
    )
    await publish()
    before = await stream.collect()
    assert {e["message"]["context"] for e in before} == {acme, "industry:steel"}
    held = {e["message"]["context"]: e["message"]["seq_to"] for e in before}
    last_id = before[-1]["id"]
    await stream.close()

    await db(
        "UPDATE emission_records SET scope1_tonnes = 402 WHERE company_id = %s AND year = 2024",
        [world["acme"]],
    )
    await publish()
    await db("UPDATE companies SET name = 'Resumed Co' WHERE id = %s", [world["acme"]])
    await publish()

    again = Stream(f"{query}&since=0", headers=[(b"last-event-id", last_id.encode())])
    await again.opened()
    after = await again.collect()
    assert after and all(e["event"] == "batch" for e in after)
    for context in (acme, "industry:steel"):
        batches = [e["message"] for e in after if e["message"]["context"] == context]
        assert batches[0]["prev_seq"] == held[context]
        received = [seq for batch in batches for seq in seqs(batch)]
        assert received == sorted(set(received)), "no duplicates, in order"
        assert all(seq > held[context] for seq in received), "nothing before the id"
        fields = [item["fields"] for batch in batches for item in batch["changes"]]
        assert any(f.get("scope1_tonnes") == 402.0 for f in fields)
        assert any(f.get("name") == "Resumed Co" for f in fields)
        assert not any(f.get("scope1_tonnes") == 401.0 for f in fields)
    await again.close()


async def test_undecodable_last_event_id_resets_every_context(world):
    await publish()
    acme = company(world, "acme")
    stream = Stream(
        f"contexts={acme},industry:steel&since=0", headers=[(b"last-event-id", b"not-ours")]
    )
    await stream.opened()
    state = await database_sync_to_async(change_log_state)()
    resets = [await stream.event(), await stream.event()]
    for event, context in zip(resets, (acme, "industry:steel"), strict=True):
        assert event["event"] == "reset" and "id" not in event
        assert event["message"] == {
            "type": "reset",
            "context": context,
            "reason": "cursor_invalid",
            "epoch": state.epoch,
            "seq": state.head_seq,
        }
    assert await stream.collect() == [], "no catch-up from since=0"
    # It continues from the head.
    await db("UPDATE companies SET name = 'After Reset' WHERE id = %s", [world["acme"]])
    await publish()
    live = await stream.collect()
    assert live and all(e["message"]["prev_seq"] <= state.head_seq for e in live)
    await stream.close()


async def test_last_event_id_of_another_epoch(world):
    await publish()
    token = sse_codec.cursor_token("f" * 32, {"industry:steel": 1})
    stream = Stream("contexts=industry:steel", headers=[(b"last-event-id", token.encode())])
    await stream.opened()
    reset = await stream.event()
    assert reset["message"]["reason"] == "epoch_changed"
    await stream.close()


async def test_a_context_added_again_after_a_reconnect_resumes_from_the_id(world):
    """The token also covers contexts added by `session.subscribe`; re-adding one after a
    reconnect continues from its cursor there (here with the polyfills' `lastEventId`)."""
    await publish()
    acme = company(world, "acme")
    stream = Stream("contexts=overview")
    hello, _ = await stream.opened()
    group = sse.session_group(hello["session"])
    await get_channel_layer().group_send(group, {"type": "session.subscribe", "contexts": [acme]})
    await stream.until("subscribed")
    await db("UPDATE companies SET name = 'Before Co' WHERE id = %s", [world["acme"]])
    await publish()
    before = [e for e in await stream.collect() if e["message"]["context"] == acme]
    held, last_id = before[-1]["message"]["seq_to"], before[-1]["id"]
    assert sse_codec.cursor_token_decode(last_id).cursors[acme] == held
    await stream.close()

    await db("UPDATE companies SET name = 'Missed Co' WHERE id = %s", [world["acme"]])
    await publish()
    again = Stream(f"contexts=overview&lastEventId={last_id}")
    hello, _ = await again.opened()
    head = (await database_sync_to_async(change_log_state)()).head_seq
    await get_channel_layer().group_send(  # as POST /api/realtime/subscribe sends it
        sse.session_group(hello["session"]),
        {"type": "session.subscribe", "contexts": [acme], "since": head},
    )
    # Until the `subscribed` that adds the company (however slow the machine), then the rest.
    events = []
    while not any(m["type"] == "subscribed" and acme in m["contexts"] for m in events):
        event = await again.event(5)
        if event.get("event") != "heartbeat":
            events.append(event["message"])
    events += [e["message"] for e in await again.collect()]
    subscribed = next(m for m in events if m["type"] == "subscribed" and acme in m["contexts"])
    assert subscribed["contexts"] == ["overview", acme]
    catch_up = next(m for m in events if m.get("context") == acme)
    assert catch_up["type"] == "batch" and catch_up["prev_seq"] == held
    assert [i["fields"].get("name") for i in catch_up["changes"]] == ["Missed Co"]
    await again.close()
