"""kill -9 of the publisher mid-stream: the restarted publisher (or, while it is down,
Celery beat's safety net) publishes what it missed; clients lose nothing."""

import asyncio
import signal
import time

import pytest

from tests.faults.conftest import wait_for_no_connection_rows
from tests.faults.followers import log_head, run_through_fault, summary
from tests.live.conftest import database_url_of_tests

pytestmark = [pytest.mark.timeout(150), pytest.mark.asyncio]


def contexts_of(world) -> list[str]:
    return [f"company:{world['acme']}", "industry:steel", "overview"]


async def test_publisher_kill_9_mid_stream(fault_stack, transactional_db, world, recovery_report):
    database_url = database_url_of_tests()
    stack = fault_stack(("web", "publisher"))

    async def kill_and_restart(clients) -> dict:
        t_fault = time.monotonic()
        await asyncio.to_thread(stack.stop, "publisher", sig=signal.SIGKILL)
        # Nothing is published while it is down: the head now is the last seq out.
        head = await asyncio.to_thread(log_head, database_url)
        await asyncio.to_thread(stack.start, "publisher")
        return {"t_fault": t_fault, "t_back": time.monotonic(), "min_seq": head}

    run = await run_through_fault(
        stack=stack,
        database_url=database_url,
        world=world,
        contexts=contexts_of(world),
        fault=kill_and_restart,
    )
    # The clients never noticed, apart from the pause: no connection was lost.
    assert all(len(c.greeted) == 1 for c in run.clients), [c.closes for c in run.clients]
    left = await asyncio.to_thread(
        wait_for_no_connection_rows, database_url, stack.processes["web"].pid
    )
    recovery_report("publisher kill -9", **run.figures)
    assert left == 0, f"{left} active_connections rows after every client closed"


async def test_beat_publishes_while_the_publisher_is_down(
    fault_stack, transactional_db, world, recovery_report
):
    """With the Procfile's worker and beat running, changes keep reaching clients while
    run_publisher is dead: beat's `publish-changes` task (every second) publishes them."""
    database_url = database_url_of_tests()
    stack = fault_stack(("web", "publisher", "worker", "beat"))
    down_for_s = 6.0
    beat_firsts: list[float] = []

    async def kill_wait_restart(clients) -> dict:
        t_fault = time.monotonic()
        await asyncio.to_thread(stack.stop, "publisher", sig=signal.SIGKILL)
        head = await asyncio.to_thread(log_head, database_url)
        # The worker and beat may still be starting: give the safety net its chance.
        deadline = t_fault + 30
        while time.monotonic() < deadline:
            firsts = [c.first_batch_after(t_fault, min_seq=head) for c in clients]
            if all(firsts) and time.monotonic() - t_fault >= down_for_s:
                break
            await asyncio.sleep(0.1)
        beat_firsts.extend(t - t_fault for t in firsts if t)
        assert len(beat_firsts) == len(firsts), "nothing was published while it was down"
        head = await asyncio.to_thread(log_head, database_url)
        await asyncio.to_thread(stack.start, "publisher")
        return {"t_fault": t_fault, "t_back": time.monotonic(), "min_seq": head}

    run = await run_through_fault(
        stack=stack,
        database_url=database_url,
        world=world,
        contexts=contexts_of(world),
        fault=kill_wait_restart,
        # Worker and beat start beside web and publisher on two cores.
        steady_s=3.0,
    )
    left = await asyncio.to_thread(
        wait_for_no_connection_rows, database_url, stack.processes["web"].pid
    )
    recovery_report(
        "publisher down, beat safety net",
        beat_first_batch_s=summary(beat_firsts),
        **run.figures,
    )
    assert "publish_changes_task" in stack.log("worker")
    assert left == 0, f"{left} active_connections rows after every client closed"
