"""Shared fixtures of the fault tests: backing services of the test's own (a Redis and a
PostgreSQL it may kill and restart: tests/faults/private_servers.py), the live stack on
them, and where recovery times go.

Every fixture here stops what it started, also when the test fails, and checks that it
did: a fault test that leaves processes behind would make the next one lie.
"""

import datetime as dt
import json
import os
import pwd
import time

import psycopg
import pytest

from tests.faults.private_servers import (
    PrivatePostgres,
    PrivateRedis,
    descendant_pids,
    pg_bin_dir,
    process_alive,
)
from tests.live.conftest import REPO, stack_env, stack_start

# Where each fault test appends its recovery times, one JSON object a line;
# docs/operations.md quotes them (test-artifacts/ is not committed).
RECOVERY_LOG = REPO / "test-artifacts" / "faults" / "recovery.jsonl"


@pytest.fixture
def private_redis(tmp_path):
    redis = PrivateRedis(tmp_path)
    redis.start()
    try:
        yield redis
    finally:
        if redis.process and redis.process.poll() is None:
            redis.kill()


@pytest.fixture
def private_postgres():
    """A running PostgreSQL of this test's own with an empty database `carbon`."""
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (/usr/lib/postgresql or the embedded default's wheel)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a `postgres` user to run PostgreSQL as")
    server = PrivatePostgres(bin_dir)
    try:
        server.initdb()
        server.start()
        with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {server.DATABASE}")
        yield server
    finally:
        server.destroy()
    leftovers = [pid for pid in server.pids_seen if process_alive(pid)]
    assert leftovers == [], f"PostgreSQL processes left behind: {leftovers}"


# -- the stack ----------------------------------------------------------------------------


@pytest.fixture
def fault_stack(tmp_path):
    """Start the Procfile's processes with `fault_stack(names, **env)`; everything started
    is stopped at the end, and must have exited."""
    stacks = []

    def start(names=("web", "publisher"), **extra):
        env = stack_env(**{"REALTIME_MAX_CONNECTIONS_PER_ADDRESS": "10000", **extra})
        stack = stack_start(names, env=env, logs=tmp_path)
        # Where the processes write, so where the test reads the log and their rows.
        stack.database_url = env["DATABASE_URL"]
        # Every process ever started under each name (restarts replace the entry).
        stack.started = list(stack.processes.values())
        original_start = stack.start

        def start_again(name):
            process = original_start(name)
            stack.started.append(process)
            return process

        stack.start = start_again
        stacks.append(stack)
        return stack

    descendants: set[int] = set()
    try:
        yield start
    finally:
        for stack in stacks:
            # Celery's pool processes and anything else the processes started.
            for process in stack.started:
                descendants.update(descendant_pids(process.pid))
            stack.stop_all()
    running = [p.args for stack in stacks for p in stack.started if p.poll() is None]
    assert running == [], f"processes left running: {running}"
    deadline = time.monotonic() + 5
    while any(process_alive(pid) for pid in descendants) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphans = [pid for pid in descendants if process_alive(pid)]
    assert orphans == [], f"child processes left running: {orphans}"


# -- recovery figures ---------------------------------------------------------------------


@pytest.fixture
def recovery_report(request):
    """`recovery_report(fault, **figures)`: print the figures and append them to
    RECOVERY_LOG as one JSON line."""

    def report(fault: str, **figures) -> None:
        record = {
            "fault": fault,
            "test": request.node.nodeid,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **figures,
        }
        RECOVERY_LOG.parent.mkdir(parents=True, exist_ok=True)
        with open(RECOVERY_LOG, "a") as log:
            log.write(json.dumps(record) + "\n")
        print(f"\nrecovery {fault}: {json.dumps(figures)}")

    return report
