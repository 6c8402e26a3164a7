"""kill -9 of the web server mid-stream: clients reconnect to the restarted server with
their cursors and miss nothing."""

import asyncio
import signal
import time

import pytest

from tests.faults.database import connection_rows
from tests.faults.fault_run import run_through_fault
from tests.faults.followers import Following, followers

pytestmark = [pytest.mark.timeout(150), pytest.mark.asyncio]


async def test_web_server_kill_9_mid_stream(fault_stack, transactional_db, world, recovery_report):
    stack = fault_stack(("web", "publisher"))
    killed = stack.processes["web"].pid

    async def kill_and_restart(clients) -> dict:
        await asyncio.to_thread(stack.stop, "web", sig=signal.SIGKILL)
        # The same port again, as a supervisor (systemd, honcho, Kubernetes) would.
        await asyncio.to_thread(stack.start, "web")
        return {"greeted_after": True}

    run = await run_through_fault(stack=stack, world=world, fault=kill_and_restart)

    # Nothing was refused on the way back: every reconnect found the server or waited.
    assert all(c.greeted[-1] > run.fault["t_fault"] for c in run.clients)
    # The killed process could not remove its rows: they stay until the sweep
    # (REALTIME_CONNECTION_STALE_S) and are reported, not hidden.
    stale = await asyncio.to_thread(connection_rows, stack.database_url, killed)
    recovery_report(
        "web kill -9",
        **run.figures,
        server_listening_s=round(run.fault["t_back"] - run.fault["t_fault"], 3),
        rows_left_by_killed_process=stale,
    )
    assert run.rows_left == 0, (
        f"{run.rows_left} active_connections rows of the restarted server after close"
    )
    assert stale <= len(run.clients)


async def test_clients_of_a_killed_server_are_not_counted_twice(fault_stack, transactional_db):
    """A web server killed with -9 leaves its rows; the restarted server deletes the rows
    of stopped processes of its host when it starts, so the same clients reconnecting are
    not counted twice against the per-address limit."""
    # Four clients of one address under a limit of five: fine before the kill.
    stack = fault_stack(("web",), REALTIME_MAX_CONNECTIONS_PER_ADDRESS="5")
    clients = followers(stack, ["overview"], 0, websockets=4, sse=0, seconds=40)
    async with Following(clients) as following:
        await following.all_greeted()
        t_kill = time.monotonic()
        await asyncio.to_thread(stack.stop, "web", sig=signal.SIGKILL)
        await asyncio.to_thread(stack.start, "web")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            back = sum(any(t > t_kill for t in c.greeted) for c in clients)
            refused = [o for c in clients for _, o in c.closes if "4429" in o]
            if back == len(clients) or refused:
                break
            await asyncio.sleep(0.1)
    assert refused == [], f"{back} of {len(clients)} back, the others refused: {refused}"
    assert back == len(clients), f"{back} of {len(clients)} back"
