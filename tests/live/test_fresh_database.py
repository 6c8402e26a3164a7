"""A freshly created database, set up as `make run` sets it up (migrate, then the demo
load, which resets the change log over a never-used sequence): its first published
change (seq 1) reaches a WebSocket, an SSE and a polling client, and `since=0` is a
cursor, not a `cursor_too_old` reset."""

import asyncio
import json
import os
import subprocess
import sys
import uuid

import httpx
import psycopg
import pytest
from django.db import connection
from websockets.asyncio.client import connect

from tests.live.conftest import REPO, stack_start
from tests.live.test_websocket_live import recv
from tests.sse_events import sse_events

pytestmark = [pytest.mark.timeout(180)]


def server_url(dbname: str) -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{dbname}"


@pytest.fixture
def fresh_stack(tmp_path):
    """A new database on the tests' PostgreSQL, migrated and loaded by the commands
    `make run` uses, with the web server and the publisher on it."""
    name = f"carbon_fresh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = server_url(name)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_PREFIX": f"{os.environ.get('REDIS_PREFIX', 'carbon')}-{name}",
        "REALTIME_MAX_CONNECTIONS_PER_ADDRESS": "100",
    }
    stack = None
    try:
        for command in (
            ["migrate", "--noinput"],
            ["seed_demo", "--if-empty", "--companies", "40", "--years", "2", "--seed", "7"],
        ):
            subprocess.run(
                [sys.executable, "manage.py", *command],
                cwd=REPO,
                env=env,
                check=True,
                timeout=120,
                capture_output=True,
            )
        stack = stack_start(("web", "publisher"), env=env, logs=tmp_path)
        stack.database_url = url
        yield stack
    finally:
        if stack is not None:
            stack.stop_all()
        with psycopg.connect(server_url("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def sse_first_batch(url: str, subscribed: asyncio.Event) -> dict:
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("GET", url) as response,
    ):
        assert response.status_code == 200
        async for event in sse_events(response):
            assert event.event != "reset", event.data
            if event.event == "subscribed":
                subscribed.set()
            elif event.event == "batch":
                return event.json()
    raise AssertionError("the stream ended")


@pytest.mark.asyncio
async def test_first_change_of_a_fresh_log_reaches_every_transport(fresh_stack):
    with psycopg.connect(fresh_stack.database_url, autocommit=True) as db:
        state = db.execute("SELECT head_seq, pruned_through_seq FROM change_log_state").fetchone()
        assert state == (0, 0)  # nothing was ever published, nothing pruned
        company, industry = db.execute(
            "SELECT c.id, i.slug FROM companies c JOIN industries i ON i.id = c.industry_id"
            " JOIN emission_records er ON er.company_id = c.id"
            " WHERE c.is_public AND er.verification_status <> 'rejected' ORDER BY c.name LIMIT 1"
        ).fetchone()
    contexts = [f"company:{company}", f"industry:{industry}"]
    query = f"contexts={','.join(contexts)}"
    http = fresh_stack.http_url

    async with connect(fresh_stack.ws_url) as ws:
        hello = await recv(ws, "hello")
        assert hello["seq"] == 0
        await ws.send(json.dumps({"type": "subscribe", "contexts": contexts, "since": 0}))
        subscribed = await recv(ws, "subscribed")
        assert subscribed["contexts"] == contexts and subscribed["rejected"] == []

        sse_ready = asyncio.Event()
        sse = asyncio.create_task(
            sse_first_batch(f"{http}/api/stream/dashboard?{query}&since=0", sse_ready)
        )
        await asyncio.wait_for(sse_ready.wait(), 20)
        async with httpx.AsyncClient(timeout=40) as client:
            poll = asyncio.create_task(client.get(f"{http}/api/updates/latest/0?{query}&wait=25"))
            await asyncio.sleep(0.5)  # the long poll is parked
            with psycopg.connect(fresh_stack.database_url, autocommit=True) as db:
                db.execute(
                    "UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1"
                    " WHERE company_id = %s",
                    [company],
                )
            answer = (await poll).json()

        batches = {}
        while len(batches) < 2:
            message = json.loads(await asyncio.wait_for(ws.recv(), 20))
            assert message["type"] != "reset", message
            if message["type"] == "batch":
                batches[message["context"]] = message
        for context in contexts:
            assert batches[context]["prev_seq"] == 0
            assert batches[context]["changes"][0]["seq"] == 1
        sse_batch = await asyncio.wait_for(sse, 20)
        assert sse_batch["changes"][0]["seq"] == 1

    assert answer["reset"] is None
    assert answer["changes"][0]["seq"] == 1
    assert {item["context"] for item in answer["changes"]} == set(contexts)

    # Later, a client resuming from 0 gets seq 1 from the log, not a reset.
    async with connect(fresh_stack.ws_url) as ws:
        await recv(ws, "hello")
        await ws.send(json.dumps({"type": "subscribe", "contexts": contexts[:1], "since": 0}))
        await recv(ws, "subscribed")
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert message["type"] == "batch", message
        assert message["changes"][0]["seq"] == 1
