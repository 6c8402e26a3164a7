"""The read replica against a real streaming standby (tests/replica/conftest.py): the
snapshots, the directory, the REST lists and catch-up reads land on it, writes on the
primary; a replica behind the client's cursor or down is never seen by the client."""

from __future__ import annotations

import json
import re
import time

import httpx
import psycopg
import pytest
from websockets.sync.client import connect

from tests.faults.database import log_head, wait_until_published
from tests.replica.conftest import RETRY_S

pytestmark = pytest.mark.timeout(90)

READS = "carbon_database_reads_total"
FALLBACKS = "carbon_database_replica_fallbacks_total"


def metric(pair, name: str, label: str, value: str) -> float:
    """One labelled counter of the web process's /metrics (0 before its first count)."""
    text = httpx.get(f"{pair.stack.http_url}/metrics", timeout=5).text
    found = re.search(rf'^{name}{{{label}="{value}"}} (\S+)$', text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def rename(pair, company: str, name: str) -> int:
    """Rename a company on the primary; the log's head once it is published."""
    with psycopg.connect(pair.primary.url(), autocommit=True) as conn:
        conn.execute("UPDATE companies SET name = %s WHERE id = %s", [name, company])
    wait_until_published(pair.primary.url())
    return log_head(pair.primary.url())


def company(pair, company_id, **headers) -> httpx.Response:
    response = httpx.get(
        f"{pair.stack.http_url}/api/companies/{company_id}/", headers=headers, timeout=10
    )
    assert response.status_code == 200, response.text
    return response


def poll(pair, cursor: int, context: str) -> dict:
    response = httpx.get(
        f"{pair.stack.http_url}/api/updates/latest/{cursor}",
        params={"contexts": context},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def ws_catch_up(pair, context: str, since: int, until_seq: int, timeout: float = 10) -> list:
    """Subscribe over WebSocket from `since`; the batches until one reaches `until_seq`."""
    batches = []
    with connect(pair.stack.ws_url, open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        ws.send(json.dumps({"type": "subscribe", "contexts": [context], "since": since}))
        deadline = time.monotonic() + timeout
        while not batches or batches[-1]["seq_to"] < until_seq:
            message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            assert message["type"] not in ("reset", "error"), message
            if message["type"] == "batch":
                batches.append(message)
    return batches


def test_reads_land_on_the_replica_and_writes_on_the_primary(replica_pair):
    pair = replica_pair
    acme = pair.world["acme"]
    head = rename(pair, acme, "Acme Steel Replicated")
    pair.standby.wait_for_head(head)
    replica_before = metric(pair, READS, "database", "replica")
    primary_before = metric(pair, READS, "database", "primary")

    base = pair.stack.http_url
    for path in ("/api/companies/", "/api/industries/", "/api/overview/", "/api/overview/changes/"):
        response = httpx.get(f"{base}{path}", timeout=10)
        assert response.status_code == 200, (path, response.text)
        assert int(response.headers["X-Change-Seq"]) == head
    detail = company(pair, acme)
    assert detail.json()["name"] == "Acme Steel Replicated"
    page = poll(pair, 0, f"company:{acme}")
    assert page["reset"] is None and page["next"] == head
    assert "Acme Steel Replicated" in [item["fields"].get("name") for item in page["changes"]]

    # Six reads, every one answered by the replica, none by the primary.
    assert metric(pair, READS, "database", "replica") - replica_before == 6
    assert metric(pair, READS, "database", "primary") == primary_before
    # The product's own connections are on the standby, and read the tables there.
    sessions = pair.standby.sql(
        "SELECT count(*), bool_or(query ~ '(change_log_state|change_routes|companies)')"
        " FROM pg_stat_activity"
        " WHERE datname = 'carbon' AND backend_type = 'client backend'"
        " AND pid <> pg_backend_pid()"
    )
    assert sessions[0] >= 1 and sessions[1], sessions

    # A write of the web process (a WebSocket's connection row) goes to the primary: the
    # standby is read-only and would refuse it, and the request would fail.
    ws_catch_up(pair, f"company:{acme}", since=0, until_seq=head)
    with psycopg.connect(pair.primary.url()) as conn:
        rows = conn.execute("SELECT count(*) FROM active_connections").fetchone()[0]
    assert rows >= 1


def test_a_replica_behind_the_client_is_not_used(replica_pair):
    pair = replica_pair
    acme = pair.world["acme"]
    context = f"company:{acme}"
    before = rename(pair, acme, "Acme Before Pause")
    pair.standby.wait_for_head(before)
    pair.standby.replay_pause()
    try:
        while pair.standby.sql("SELECT pg_get_wal_replay_pause_state()")[0] != "paused":
            time.sleep(0.01)
        head = rename(pair, acme, "Acme During Pause")
        assert head > before
        time.sleep(0.2)
        assert pair.standby.head() == before, "replay did not pause"
        behind = metric(pair, FALLBACKS, "reason", "behind")

        # A snapshot without a cursor may come from the replica: its seq and data agree.
        old = company(pair, acme)
        assert int(old.headers["X-Change-Seq"]) == before
        assert old.json()["name"] == "Acme Before Pause"
        # A client that holds `head` gets a snapshot at least that new (the primary's).
        new = company(pair, acme, **{"X-Change-Seq-Min": str(head)})
        assert int(new.headers["X-Change-Seq"]) >= head
        assert new.json()["name"] == "Acme During Pause"

        # A poll from a cursor the replica has not replayed: the replica would call it
        # invalid (above its head); the primary answers, with no reset.
        started = time.monotonic()
        page = poll(pair, head, context)
        waited = time.monotonic() - started
        assert page["reset"] is None and page["next"] >= head
        # A WebSocket subscriber from before the pause gets the change made during it.
        batches = ws_catch_up(pair, context, since=before, until_seq=head)
        names = [item["fields"].get("name") for b in batches for item in b["changes"]]
        assert "Acme During Pause" in names
        assert metric(pair, FALLBACKS, "reason", "behind") >= behind + 2
        print(f"\nreplica behind: poll answered by the primary in {waited * 1000:.0f} ms")
    finally:
        pair.standby.replay_resume()

    caught_up = pair.standby.wait_for_head(head)
    replica = metric(pair, READS, "database", "replica")
    page = poll(pair, head, context)
    assert page["reset"] is None and page["next"] == head
    assert company(pair, acme, **{"X-Change-Seq-Min": str(head)}).json()["name"] == (
        "Acme During Pause"
    )
    assert metric(pair, READS, "database", "replica") == replica + 2
    print(f"replay resumed: replica at the head after {caught_up * 1000:.0f} ms")


def test_a_replica_down_is_left_and_used_again(replica_pair):
    pair = replica_pair
    acme = pair.world["acme"]
    context = f"company:{acme}"
    head = rename(pair, acme, "Acme Before Crash")
    pair.standby.wait_for_head(head)
    down = metric(pair, FALLBACKS, "reason", "down")
    pair.standby.stop_immediate()
    try:
        timings = []
        for _ in range(6):
            started = time.monotonic()
            assert company(pair, acme).json()["name"] == "Acme Before Crash"
            page = poll(pair, 0, context)
            assert page["reset"] is None and page["next"] >= head
            overview = httpx.get(f"{pair.stack.http_url}/api/overview/", timeout=10)
            assert overview.status_code == 200
            timings.append(time.monotonic() - started)
            time.sleep(0.3)
        # A change while the replica is down reaches a catching-up client too.
        later = rename(pair, acme, "Acme During Crash")
        batches = ws_catch_up(pair, context, since=head, until_seq=later)
        names = [item["fields"].get("name") for b in batches for item in b["changes"]]
        assert "Acme During Crash" in names
        failures = metric(pair, FALLBACKS, "reason", "down") - down
        # Tried again every RETRY_S, not at every read.
        assert 1 <= failures <= 2 + 6 * 0.3 / RETRY_S + 2, failures
        print(
            f"\nreplica down: three reads took {max(timings) * 1000:.0f} ms at most,"
            f" {min(timings) * 1000:.0f} ms at least; {failures:.0f} failed tries"
        )
    finally:
        restart = pair.standby.start()

    pair.standby.wait_for_head(later)
    time.sleep(RETRY_S)
    replica = metric(pair, READS, "database", "replica")
    deadline = time.monotonic() + 10
    while metric(pair, READS, "database", "replica") == replica:
        assert time.monotonic() < deadline, "the replica was not used again"
        assert company(pair, acme).json()["name"] == "Acme During Crash"
        time.sleep(0.1)
    print(f"replica restarted in {restart:.2f} s and used again")
