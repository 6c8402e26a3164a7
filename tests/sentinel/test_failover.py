"""kill -9 of the Redis master mid-stream, with the product on Sentinel: the sentinels
promote the replica and every process carries on without a restart. Clients receive
every change exactly once and in order (what was lost in flight is read from the log),
the hubs are subscribed to their groups on the new master, a fresh change reaches a
fresh client, a Celery task runs through the Sentinel broker, and the delivery pause is
reported."""

import asyncio
import itertools
import time

import psycopg
import pytest
from django.conf import settings

from tests.faults.database import context_heads, log_head, wait_until_published
from tests.faults.fault_run import run_through_fault
from tests.faults.followers import Following, followed_contexts, followers
from tests.faults.private_servers import process_alive
from tests.live.conftest import benchmark_recompute_send

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio]

# After the promotion, the hubs are subscribed to their groups on the new master within
# this long (redis-py's pub/sub reconnects when channels_redis next reads, every 0.1 s to
# 1 s, and asks the sentinels for the master).
REGROUP_TIMEOUT_S = 15.0
# A fresh change reaches a fresh client within this long once the hubs are back in their
# groups (tens of milliseconds when published live; the log repair alone takes a second).
FRESH_DELIVERY_S = 10.0


def group_channels(node) -> set[bytes]:
    """The channel layer's group channels a Redis node has subscribers on."""
    client = node.client()
    try:
        return set(client.pubsub_channels(f"{settings.REDIS_PREFIX}:layer__group__*"))
    finally:
        client.close()


def query(database_url: str, statement: str, params: list) -> list[tuple]:
    """One statement on a connection of its own (autocommit), rows if any."""
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def longest_silence(client, since: float, until: float) -> float:
    """The longest time between two batches this client received in [since, until]."""
    times = sorted(b.at for batches in client.batches.values() for b in batches)
    times = [since, *(t for t in times if since <= t <= until), until]
    return max(b - a for a, b in itertools.pairwise(times))


async def test_master_kill_9_fails_over_without_a_restart(
    sentinel_cluster, fault_stack, transactional_db, world, recovery_report
):
    stack = fault_stack(("web", "publisher", "worker"), **sentinel_cluster.env)
    pids = {name: process.pid for name, process in stack.processes.items()}
    seen: dict = {}

    async def kill_master(clients) -> None:
        seen["groups"] = await asyncio.to_thread(group_channels, sentinel_cluster.master)
        await asyncio.to_thread(sentinel_cluster.kill_master)
        seen["promoted_at"] = await asyncio.to_thread(sentinel_cluster.wait_for_promotion)
        # The hubs are subscribed on the new master to every group they had on the old
        # one (checked while the clients still follow: the hubs leave a group with its
        # last subscriber).
        while not seen["groups"] <= await asyncio.to_thread(
            group_channels, sentinel_cluster.replica
        ):
            assert time.monotonic() - seen["promoted_at"] < REGROUP_TIMEOUT_S, seen["groups"]
            await asyncio.sleep(0.05)
        seen["regrouped_at"] = time.monotonic()

    run = await run_through_fault(stack=stack, world=world, fault=kill_master)
    t_fault = run.fault["t_fault"]
    assert len(seen["groups"]) > 3, seen["groups"]  # system, 3 contexts, the sessions

    # A fresh client, a fresh change: delivered through the new master.
    database_url = stack.database_url
    contexts = followed_contexts(world)
    start = await asyncio.to_thread(log_head, database_url)
    fresh = followers(stack, contexts, start, websockets=1, sse=1, seconds=30)
    async with Following(fresh) as following:
        await following.all_greeted()
        changed_at = time.monotonic()
        await asyncio.to_thread(
            query,
            database_url,
            "UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1 WHERE company_id = %s",
            [world["acme"]],
        )
        await asyncio.to_thread(wait_until_published, database_url)
        heads = await asyncio.to_thread(context_heads, database_url, contexts)
        await following.all_caught_up(heads, timeout=FRESH_DELIVERY_S)
        arrived = [c.first_batch_after(changed_at) for c in fresh]
        assert None not in arrived, "the fresh change reached no fresh client"
        fresh_delivery_s = max(arrived) - changed_at

    # A Celery task sent through the Sentinel broker runs on the worker that lived
    # through the failover.
    steel = str(world["steel"])
    sent_at = time.monotonic()
    await asyncio.to_thread(benchmark_recompute_send, stack.env, steel)
    benchmarks = "SELECT count(*) FROM industry_benchmarks WHERE industry_id = %s"
    while not (await asyncio.to_thread(query, database_url, benchmarks, [steel]))[0][0]:
        assert time.monotonic() - sent_at < 30, stack.log("worker")[-3000:]
        await asyncio.sleep(0.2)
    task_s = time.monotonic() - sent_at

    # Nothing was restarted: the same processes, all still running.
    assert {name: p.pid for name, p in stack.processes.items()} == pids
    assert len(stack.started) == len(pids)
    assert all(process_alive(pid) for pid in pids.values())
    # Redis failing over is not a reason to drop clients.
    assert all(len(c.greeted) == 1 for c in run.clients), [c.closes for c in run.clients]
    assert run.rows_left == 0

    until = max(c.first_batch_after(seen["promoted_at"]) or 0 for c in run.clients)
    silences = [longest_silence(c, t_fault - 1.0, until) for c in run.clients]
    recovery_report(
        "redis master kill -9, sentinel failover",
        **run.figures,
        promotion_s=round(seen["promoted_at"] - t_fault, 3),
        groups_back_s=round(seen["regrouped_at"] - t_fault, 3),
        delivery_pause_s={"min": round(min(silences), 3), "max": round(max(silences), 3)},
        fresh_client_delivery_s=round(fresh_delivery_s, 3),
        celery_task_after_failover_s=round(task_s, 2),
    )
