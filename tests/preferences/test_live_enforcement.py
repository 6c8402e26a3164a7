"""Refresh policies and preferences enforced per context on open WebSocket connections:
intervals, debounce, manual mode, paused, and changes reaching the client's own open
connections within a second. Real PostgreSQL, Redis and channel layer."""

import pytest
from channels.db import database_sync_to_async

from tests.preferences.conftest import (
    PREFERENCES,
    anonymous_session,
    make_user,
    policy_set,
    token_header,
)
from tests.preferences.live_policy import (
    ANONYMOUS_METRICS,
    POLICY_DEADLINE_S,
    put_json,
    put_policies_as_staff,
    record,
    rename,
    set_preferences,
)
from tests.realtime.conftest import ORIGIN, greeted, make_client, publish, receive_until, subscribe

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def test_a_policy_change_is_enforced_on_an_open_connection_within_a_second(world):
    """An open WebSocket on a real-time policy: staff raise the minimum interval through
    the admin API; the client is told at once, and from then on changes published within
    the interval reach it as one batch."""
    acme = world["acme"]
    context = f"company:{acme}"
    await publish()
    communicator, hello = await greeted()
    assert hello["policy"]["categories"]["company_metrics"]["mode"] == "realtime"
    await subscribe(communicator, [context])

    # Real time: one batch per published change.
    for name in ("Alpha", "Beta", "Gamma"):
        await rename(acme, name)
        batch = await receive_until(communicator, "batch")
        assert [item["fields"]["name"] for item in batch["changes"]] == [name]

    response = await put_policies_as_staff({**ANONYMOUS_METRICS, "min_interval_ms": 3000})
    assert response.status_code == 200, response.text

    message = await receive_until(communicator, "policy", timeout=POLICY_DEADLINE_S)
    entry = message["policy"]["categories"]["company_metrics"]
    assert entry["mode"] == "realtime"
    assert entry["min_interval_ms"] == 3000 and entry["interval_ms"] == 3000
    assert message["policy"]["min_interval_ms"] == 0  # industry and directory did not move

    # One batch, then three changes of three records published within the interval: they
    # arrive together, as one batch, after it.
    await rename(acme, "Delta")
    first = await receive_until(communicator, "batch")
    assert [item["fields"]["name"] for item in first["changes"]] == ["Delta"]
    await rename(acme, "Epsilon")
    await record(acme, 2023, 123)
    await record(acme, 2024, 456)
    merged = await receive_until(communicator, "batch")
    assert merged["prev_seq"] == first["seq_to"]
    entities = {(item["entity"], item["fields"].get("year")) for item in merged["changes"]}
    assert entities == {("company", None), ("emission_record", 2023), ("emission_record", 2024)}
    assert next(i for i in merged["changes"] if i["entity"] == "company")["fields"]["name"] == (
        "Epsilon"
    )
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_an_interval_preference_coalesces_and_its_change_applies_at_once(world):
    acme = world["acme"]
    await publish()
    user, key = await make_user("viewer")
    await set_preferences(user, None, {"categories": {"company_metrics": {"mode": "5m"}}})
    communicator, hello = await greeted([(b"authorization", f"Token {key}".encode())])
    assert hello["policy"]["categories"]["company_metrics"]["interval_ms"] == 300_000
    await subscribe(communicator, [f"company:{acme}"])
    await rename(acme, "First")
    first = await receive_until(communicator, "batch")
    await rename(acme, "Second")
    await record(acme, 2024, 777)
    # Held for five minutes ...
    assert await communicator.receive_nothing(timeout=0.5)
    # ... until the viewer switches to real time: confirmed, and what was held goes now.
    async with make_client() as http:
        response = await put_json(
            http,
            PREFERENCES,
            {"categories": {"company_metrics": {"mode": "realtime"}}},
            token_header(key),
        )
        assert response.status_code == 200, response.text
    message = await receive_until(communicator, "policy", timeout=POLICY_DEADLINE_S)
    assert message["policy"]["categories"]["company_metrics"]["mode"] == "realtime"
    held = await receive_until(communicator, "batch")
    assert held["prev_seq"] == first["seq_to"]
    assert {item["entity"] for item in held["changes"]} == {"company", "emission_record"}
    await rename(acme, "Third")
    assert (await receive_until(communicator, "batch"))["changes"][0]["fields"]["name"] == "Third"
    await communicator.disconnect()


async def test_held_frames_past_the_bound_are_read_from_the_log(world, monkeypatch):
    from realtime import pacing

    monkeypatch.setattr(pacing, "HELD_MAX_FRAMES", 2)
    acme = world["acme"]
    await publish()
    user, key = await make_user("viewer")
    await set_preferences(user, None, {"categories": {"company_metrics": {"mode": "5m"}}})
    communicator, _ = await greeted([(b"authorization", f"Token {key}".encode())])
    await subscribe(communicator, [f"company:{acme}"])
    await rename(acme, "Kept")
    first = await receive_until(communicator, "batch")
    # Five frames held: the first ones are forgotten when the bound is passed.
    await rename(acme, "Over 1")
    await record(acme, 2023, 1)
    await record(acme, 2024, 2)
    await rename(acme, "Over 2")
    await record(acme, 2023, 3)
    # The service tells the open connection once the change commits.
    await set_preferences(user, None, {"categories": {"company_metrics": {"mode": "realtime"}}})
    await receive_until(communicator, "policy")
    # ... and read back from the change log: nothing is missing.
    batch = await receive_until(communicator, "batch")
    assert batch["prev_seq"] == first["seq_to"]
    latest = {(i["entity"], i["fields"].get("year")): i["fields"] for i in batch["changes"]}
    assert latest[("company", None)]["name"] == "Over 2"
    assert latest[("emission_record", 2023)]["scope1_tonnes"] == 3
    assert latest[("emission_record", 2024)]["scope1_tonnes"] == 2
    await communicator.disconnect()


async def test_a_debounce_window_gathers_changes(world):
    acme = world["acme"]
    await publish()
    await database_sync_to_async(policy_set)("anonymous", "company_metrics", debounce_ms=1500)
    communicator, hello = await greeted()
    assert hello["policy"]["categories"]["company_metrics"]["debounce_ms"] == 1500
    await subscribe(communicator, [f"company:{acme}"])
    await rename(acme, "One")
    await record(acme, 2023, 11)
    batch = await receive_until(communicator, "batch")
    assert {item["entity"] for item in batch["changes"]} == {"company", "emission_record"}
    await communicator.disconnect()


async def test_manual_mode_holds_a_category_until_the_client_resumes(world):
    acme = world["acme"]
    await publish()
    session = await database_sync_to_async(anonymous_session)()
    await set_preferences(None, session, {"categories": {"company_metrics": {"mode": "manual"}}})
    communicator, hello = await greeted([ORIGIN, (b"cookie", f"sessionid={session}".encode())])
    assert hello["policy"]["categories"]["company_metrics"]["mode"] == "manual"
    reply = await subscribe(communicator, [f"company:{acme}", "industry:steel"])
    start = reply["seq"]
    await record(acme, 2024, 300)
    # The industry (benchmarks category) is live; the company (metrics, manual) is not.
    batch = await receive_until(communicator, "batch")
    assert batch["context"] == "industry:steel"
    assert await communicator.receive_nothing(timeout=0.5)
    # `resume` is the manual refresh: the company catches up from where it was.
    await communicator.send_json_to({"type": "resume"})
    assert (await receive_until(communicator, "subscribed"))["paused"] is False
    caught_up = await receive_until(communicator, "batch")
    assert caught_up["context"] == f"company:{acme}"
    assert caught_up["prev_seq"] == start
    assert caught_up["changes"][0]["fields"]["scope1_tonnes"] == 300
    await communicator.disconnect()


async def test_a_paused_preference_starts_the_connection_paused(world):
    acme = world["acme"]
    await publish()
    user, key = await make_user("viewer")
    await set_preferences(user, None, {"paused": True})
    communicator, hello = await greeted([(b"authorization", f"Token {key}".encode())])
    assert hello["policy"]["paused"] is True
    reply = await subscribe(communicator, [f"company:{acme}"])
    assert reply["paused"] is True
    await rename(acme, "While Paused")
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.send_json_to({"type": "resume"})
    assert (await receive_until(communicator, "subscribed"))["paused"] is False
    batch = await receive_until(communicator, "batch")
    assert batch["changes"][0]["fields"]["name"] == "While Paused"
    await communicator.disconnect()


async def test_preference_changes_reach_only_the_clients_own_connections(world):
    await publish()
    mine = await database_sync_to_async(anonymous_session)()
    theirs = await database_sync_to_async(anonymous_session)()
    own_a, _ = await greeted([ORIGIN, (b"cookie", f"sessionid={mine}".encode())])
    own_b, _ = await greeted([ORIGIN, (b"cookie", f"sessionid={mine}".encode())])
    other, _ = await greeted([ORIGIN, (b"cookie", f"sessionid={theirs}".encode())])
    for communicator in (own_a, own_b, other):
        await subscribe(communicator, ["industry:steel"])
    cookie = {"Cookie": f"sessionid={mine}"}
    async with make_client() as http:
        response = await put_json(
            http, PREFERENCES, {"categories": {"industry_benchmarks": {"mode": "1m"}}}, cookie
        )
        assert response.status_code == 200, response.text
        for communicator in (own_a, own_b):
            message = await receive_until(communicator, "policy", timeout=POLICY_DEADLINE_S)
            assert message["policy"]["categories"]["industry_benchmarks"]["interval_ms"] == 60000
        assert await other.receive_nothing(timeout=0.5)

        # Pausing in the preferences pauses the open connections too.
        response = await put_json(http, PREFERENCES, {"paused": True}, cookie)
        assert response.status_code == 200
        message = await receive_until(own_a, "policy", timeout=POLICY_DEADLINE_S)
        assert message["policy"]["paused"] is True
        assert (await receive_until(own_a, "subscribed"))["paused"] is True
        await record(world["acme"], 2024, 4321)
        assert await own_a.receive_nothing(timeout=0.5)
        assert (await receive_until(other, "batch"))["context"] == "industry:steel"
        # ... and un-pausing resumes them, with what they missed.
        response = await put_json(http, PREFERENCES, {"paused": False}, cookie)
        assert response.status_code == 200
        assert (await receive_until(own_a, "policy"))["policy"]["paused"] is False
        assert (await receive_until(own_a, "subscribed"))["paused"] is False
        assert (await receive_until(own_a, "batch"))["context"] == "industry:steel"
    for communicator in (own_a, own_b, other):
        await communicator.disconnect()


async def test_a_policy_edit_other_clients_do_not_feel_is_not_announced(world):
    communicator, _ = await greeted()
    response = await put_policies_as_staff(
        {"user_type": "registered", "category": "directory", "debounce_ms": 9}
    )
    assert response.status_code == 200
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()
