"""PostgreSQL goes away mid-stream and comes back: a fast shutdown and restart, and a
kill -9 of the postmaster (crash recovery on start). Web server and publisher reconnect
by themselves; clients get every change committed before and after, once, in order.

A PostgreSQL server of the test's own (tests/faults/private_servers.py), never the shared
one."""

import asyncio
import json

import psycopg
import pytest
from websockets.asyncio.client import connect

from tests.faults.database import connection_rows, wait_for_no_connection_rows
from tests.faults.fault_run import run_through_fault
from tests.faults.private_servers import migrate, world_insert

pytestmark = [pytest.mark.timeout(150), pytest.mark.asyncio]


@pytest.fixture
def pg_world(private_postgres, tmp_path) -> dict:
    """The private server's database, migrated, with the `world` rows."""
    migrate(private_postgres.url(), tmp_path)
    with psycopg.connect(private_postgres.url(), autocommit=True) as conn:
        return world_insert(conn)


@pytest.mark.parametrize("how", ["fast-restart", "kill-9"])
async def test_postgres_restart_mid_stream(
    how, private_postgres, pg_world, fault_stack, recovery_report
):
    stack = fault_stack(("web", "publisher"), DATABASE_URL=private_postgres.url())
    stopping: dict = {}

    async def restart(clients) -> None:
        if how == "fast-restart":
            # What `pg_ctl restart -m fast` does, with the postmaster kept as our child.
            stopping["stop_s"] = await asyncio.to_thread(private_postgres.stop_fast)
        else:
            stopping["backends_gone_s"] = await asyncio.to_thread(private_postgres.kill_postmaster)
        stopping["start_s"] = await asyncio.to_thread(private_postgres.start)

    run = await run_through_fault(stack=stack, world=pg_world, fault=restart, recovery_timeout=40)
    recovery_report(
        f"postgres {how}",
        **run.figures,
        **{key: round(value, 3) for key, value in stopping.items()},
        reconnects=sum(len(c.greeted) - 1 for c in run.clients),
        rows_left=run.rows_left,
    )
    assert stack.processes["web"].poll() is None, "the web server died with the database"
    assert stack.processes["publisher"].poll() is None, "the publisher died with the database"
    assert run.rows_left == 0, f"{run.rows_left} active_connections rows after every client closed"


async def test_connection_rows_are_deleted_after_a_postgres_restart(
    private_postgres, pg_world, fault_stack
):
    """After a PostgreSQL restart the pooled connections that died with it fail their
    first call; rows of sessions that end then are still deleted (the release is tried
    again), not left for the sweep."""
    database_url = private_postgres.url()
    stack = fault_stack(("web",), DATABASE_URL=database_url)
    web = stack.processes["web"].pid
    sockets = []
    try:
        for _ in range(3):
            ws = await connect(stack.ws_url)
            sockets.append(ws)
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "hello"
            await ws.send(json.dumps({"type": "subscribe", "contexts": ["overview"]}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"
        assert await asyncio.to_thread(connection_rows, database_url, web) == 3
        await asyncio.to_thread(private_postgres.stop_fast)
        await asyncio.to_thread(private_postgres.start)
    finally:
        for ws in sockets:
            await ws.close()
    left = await asyncio.to_thread(wait_for_no_connection_rows, database_url, web)
    assert left == 0, f"{left} active_connections rows after every client closed"
