"""Ordering under concurrency: writers, competing publishers, a publisher killed mid-batch."""

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest
from django.db import connection, connections

from changes.publisher import change_batch_publish
from changes.selectors import change_log_state, changes_since
from tests.helpers import sql

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]


def conninfo() -> str:
    settings = connection.settings_dict
    return psycopg.conninfo.make_conninfo(
        dbname=settings["NAME"],
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
    )


@pytest.fixture
def records(world):
    """40 public records over both industries."""
    sql(
        "INSERT INTO companies (name, country, industry_id)"
        " SELECT 'Firm ' || n, 'DE', CASE WHEN n %% 2 = 0 THEN %s ELSE %s END"
        " FROM generate_series(1, 20) AS n",
        [world["steel"], world["software"]],
    )
    sql(
        "INSERT INTO emission_records (company_id, year, scope1_tonnes)"
        " SELECT id, y, 0 FROM companies CROSS JOIN generate_series(2023, 2024) AS y"
        " WHERE name LIKE 'Firm %%'"
    )
    return [row[0] for row in sql("SELECT id FROM emission_records WHERE scope1_tonnes = 0")]


def writer(ids, transactions, seed, errors):
    rng = random.Random(seed)
    try:
        with psycopg.connect(conninfo(), autocommit=False) as conn:
            for _ in range(transactions):
                chosen = sorted(rng.sample(ids, 3))  # sorted: no deadlocks between writers
                with conn.transaction():
                    for record_id in chosen:
                        conn.execute(
                            "UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1"
                            " WHERE id = %s",
                            [record_id],
                        )
                        if rng.random() < 0.3:
                            time.sleep(0.001)  # interleave with other writers
    except Exception as exc:
        errors.append(exc)


def publisher_loop(stop, errors, results):
    try:
        while not stop.is_set():
            result = change_batch_publish(limit=50)
            if result is not None and result.changes:
                results.append((result.seq_from, result.seq_to))
            else:
                time.sleep(0.005)
    except Exception as exc:
        errors.append(exc)
    finally:
        connections.close_all()


def drain():
    while True:
        result = change_batch_publish()
        if not result or not result.changes:
            return


def test_concurrent_writers_and_two_publishers_keep_per_record_commit_order(records):
    drain()
    errors, results = [], []
    stop = threading.Event()
    publishers = [
        threading.Thread(target=publisher_loop, args=(stop, errors, results)) for _ in range(2)
    ]
    writers = [
        threading.Thread(target=writer, args=(records, 60, seed, errors)) for seed in range(4)
    ]
    for thread in publishers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    time.sleep(0.3)
    stop.set()
    for thread in publishers:
        thread.join()
    drain()
    assert errors == []

    # Both publishers published, and never overlapped.
    ranges = sorted(results)
    assert len(ranges) > 1
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert start > end

    rows = sql(
        "SELECT record_id, seq, (change_data->'new'->>'scope1_tonnes')::numeric"
        " FROM data_changes WHERE entity = 'emission_record' AND change_type = 'update'"
    )
    assert len(rows) == 4 * 60 * 3
    assert all(seq is not None for _, seq, _ in rows)
    assert len({seq for _, seq, _ in rows}) == len(rows)
    per_record = defaultdict(list)
    for record_id, seq, value in rows:
        per_record[record_id].append((seq, value))
    for changes in per_record.values():
        values = [value for _, value in sorted(changes)]
        # +1 per committed transaction: in seq order the values count up without a gap.
        assert values == list(range(1, len(values) + 1))


def test_catch_up_from_any_cursor_in_every_context_after_concurrent_writes(records):
    errors = []
    writers = [threading.Thread(target=writer, args=(records, 25, s, errors)) for s in range(4)]
    stop = threading.Event()
    results = []
    publisher = threading.Thread(target=publisher_loop, args=(stop, errors, results))
    publisher.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    publisher.join()
    drain()
    assert errors == []

    contexts = [row[0] for row in sql("SELECT DISTINCT context FROM change_routes")]
    assert "overview" in contexts and "industry:steel" in contexts
    for context in contexts:
        expected = [
            row[0]
            for row in sql(
                "SELECT seq FROM change_routes WHERE context = %s AND audiences & 2 <> 0"
                " ORDER BY seq",
                [context],
            )
        ]
        full = changes_since(cursors={context: 0}, audience="staff", limit=100_000).items
        assert [item["seq"] for item in full] == expected
        for cursor in random.Random(context).sample([0, *expected], min(5, len(expected) + 1)):
            rest = changes_since(cursors={context: cursor}, audience="staff", limit=100_000)
            assert [item["seq"] for item in rest.items] == [s for s in expected if s > cursor]


def test_a_publisher_killed_between_claim_and_commit_loses_nothing(records):
    drain()
    sql(
        "INSERT INTO companies (name, country, industry_id)"
        " SELECT 'Mass ' || n, 'PL', %s FROM generate_series(1, 12000) AS n",
        [sql("SELECT id FROM industries WHERE slug = 'steel'")[0][0]],
    )
    total = sql("SELECT count(*) FROM data_changes WHERE processed_at IS NULL")[0][0]
    assert total == 12000
    env = {
        **os.environ,
        "DATABASE_URL": "postgres://{USER}@{HOST}:{PORT}/{NAME}".format(**connection.settings_dict),
        "PUBLISHER_CLAIM_LIMIT": "12000",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_publisher", "--poll", "0.01", "--debounce", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        held = False
        while time.monotonic() < deadline and not held:
            held = bool(
                sql(
                    "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE l.locktype = 'advisory' AND a.datname = current_database()"
                    " AND l.pid <> pg_backend_pid()"
                )
            )
            if not held:
                time.sleep(0.002)
        assert held, "the publisher never took its lock"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    # Its backend notices the dead client and rolls back; wait for the lock to go.
    for _ in range(500):
        if not sql("SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"):
            break
        time.sleep(0.01)
    assert sql(
        "SELECT count(*) FROM data_changes WHERE processed_at IS NOT NULL"
        " AND entity = 'company' AND record_id IN (SELECT id::text FROM companies"
        " WHERE name LIKE 'Mass %%')"
    )[0][0] in (0, 12000)
    drain()
    rows = sql(
        "SELECT seq FROM data_changes WHERE entity = 'company'"
        " AND record_id IN (SELECT id::text FROM companies WHERE name LIKE 'Mass %%')"
    )
    assert len(rows) == 12000
    assert len({seq for (seq,) in rows}) == 12000 and None not in {seq for (seq,) in rows}
    assert change_log_state().head_seq >= max(seq for (seq,) in rows)
