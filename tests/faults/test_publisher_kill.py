"""kill -9 of the publisher mid-stream: the restarted publisher (or, while it is down,
Celery beat's safety net) publishes what it missed; clients lose nothing."""

import asyncio
import signal
import time

import pytest

from tests.faults.database import log_head
from tests.faults.fault_run import run_through_fault, summary

pytestmark = [pytest.mark.timeout(150), pytest.mark.asyncio]


async def publisher_restart(stack) -> dict:
    """Start the killed publisher again; the first batch after it is past the head it
    finds (nothing else publishes while it is down, or beat has published up to it)."""
    head = await asyncio.to_thread(log_head, stack.database_url)
    await asyncio.to_thread(stack.start, "publisher")
    return {"min_seq": head}


async def test_publisher_kill_9_mid_stream(fault_stack, transactional_db, world, recovery_report):
    stack = fault_stack(("web", "publisher"))

    async def kill_and_restart(clients) -> dict:
        await asyncio.to_thread(stack.stop, "publisher", sig=signal.SIGKILL)
        return await publisher_restart(stack)

    run = await run_through_fault(stack=stack, world=world, fault=kill_and_restart)
    # The clients never noticed, apart from the pause: no connection was lost.
    assert all(len(c.greeted) == 1 for c in run.clients), [c.closes for c in run.clients]
    recovery_report("publisher kill -9", **run.figures)
    assert run.rows_left == 0, f"{run.rows_left} active_connections rows after every client closed"


async def test_beat_publishes_while_the_publisher_is_down(
    fault_stack, transactional_db, world, recovery_report
):
    """With the Procfile's worker and beat running, changes keep reaching clients while
    run_publisher is dead: beat's `publish-changes` task (every second) publishes them."""
    stack = fault_stack(("web", "publisher", "worker", "beat"))
    down_for_s = 6.0
    beat_firsts: list[float] = []

    async def kill_wait_restart(clients) -> dict:
        t_fault = time.monotonic()
        await asyncio.to_thread(stack.stop, "publisher", sig=signal.SIGKILL)
        head = await asyncio.to_thread(log_head, stack.database_url)
        # The worker and beat may still be starting: give the safety net its chance.
        deadline = t_fault + 30
        while time.monotonic() < deadline:
            firsts = [c.first_batch_after(t_fault, min_seq=head) for c in clients]
            if all(firsts) and time.monotonic() - t_fault >= down_for_s:
                break
            await asyncio.sleep(0.1)
        beat_firsts.extend(t - t_fault for t in firsts if t)
        assert len(beat_firsts) == len(firsts), "nothing was published while it was down"
        return await publisher_restart(stack)

    run = await run_through_fault(
        stack=stack,
        world=world,
        fault=kill_wait_restart,
        # Worker and beat start beside web and publisher on two cores.
        steady_s=3.0,
    )
    recovery_report(
        "publisher down, beat safety net",
        beat_first_batch_s=summary(beat_firsts),
        **run.figures,
    )
    assert "publish_changes_task" in stack.log("worker")
    assert run.rows_left == 0, f"{run.rows_left} active_connections rows after every client closed"
