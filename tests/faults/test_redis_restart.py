"""kill -9 of Redis (the channel layer) mid-stream, then Redis again on the same port:
frames published while it was away are read from the log; clients lose nothing."""

import asyncio

import pytest

from tests.faults.fault_run import run_through_fault

pytestmark = [pytest.mark.timeout(150), pytest.mark.asyncio]

# How long Redis stays away: long enough for every process to notice (the publisher's
# fan-out fails, the hubs lose their subscriptions), as a restart by a supervisor takes.
REDIS_DOWN_S = 2.0


async def test_redis_kill_9_and_restart_mid_stream(
    fault_stack, private_redis, transactional_db, world, recovery_report
):
    stack = fault_stack(("web", "publisher"), REDIS_URL=private_redis.url)

    async def kill_and_restart(clients) -> None:
        await asyncio.to_thread(private_redis.kill)
        await asyncio.sleep(REDIS_DOWN_S)
        await asyncio.to_thread(private_redis.start)

    run = await run_through_fault(stack=stack, world=world, fault=kill_and_restart)
    recovery_report("redis kill -9 and restart", **run.figures)
    # Redis going away is not a reason to drop clients.
    assert all(len(c.greeted) == 1 for c in run.clients), [c.closes for c in run.clients]
    assert run.rows_left == 0, f"{run.rows_left} active_connections rows after every client closed"
