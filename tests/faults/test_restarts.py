"""One change across each restart, the short way: Redis (with no later write to reveal
the gap), the publisher, and a graceful (SIGTERM) restart of the web server. The
mid-stream kills under continuous writes are in the other tests of this directory."""

import asyncio
import json
import signal
import time

import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect

from tests.helpers import sql
from tests.live.conftest import stack_env, stack_start
from tests.live.test_websocket_live import recv, recv_change

pytestmark = [pytest.mark.timeout(180), pytest.mark.asyncio]

adb = database_sync_to_async(sql)


@pytest.fixture
def stack_on_private_redis(transactional_db, private_redis, tmp_path):
    env = stack_env(
        REDIS_URL=private_redis.url,
        REALTIME_TOUCH_INTERVAL_S="1",
        REALTIME_MAX_CONNECTIONS_PER_ADDRESS="10000",
    )
    stack = stack_start(("web", "publisher"), env=env, logs=tmp_path)
    yield stack
    stack.stop_all()


async def subscribed_client(stack, context):
    ws = await connect(stack.ws_url)
    await recv(ws, "hello")
    await ws.send(json.dumps({"type": "subscribe", "contexts": [context]}))
    await recv(ws, "subscribed")
    return ws


async def test_redis_restart_loses_nothing(stack_on_private_redis, private_redis, world):
    context = f"company:{world['acme']}"
    ws = await subscribed_client(stack_on_private_redis, context)
    try:
        await adb("UPDATE companies SET name = 'Before' WHERE id = %s", [world["acme"]])
        await recv_change(ws, "name", "Before")

        private_redis.kill()
        # Published while Redis is away: the frame is lost on the way.
        await adb("UPDATE companies SET name = 'During' WHERE id = %s", [world["acme"]])
        await asyncio.sleep(1.5)
        private_redis.start()

        # No further write: the hub's head check reads the lost frame from the log.
        batch = await recv_change(ws, "name", "During", timeout=30)
        assert batch["context"] == context
        await adb("UPDATE companies SET name = 'After' WHERE id = %s", [world["acme"]])
        await recv_change(ws, "name", "After", timeout=30)
    finally:
        await ws.close()


async def test_publisher_restart_loses_nothing(stack_on_private_redis, world):
    context = f"company:{world['acme']}"
    ws = await subscribed_client(stack_on_private_redis, context)
    try:
        stack_on_private_redis.stop("publisher", sig=signal.SIGKILL)
        await adb("UPDATE companies SET name = 'Queued' WHERE id = %s", [world["acme"]])
        await asyncio.sleep(0.5)
        stack_on_private_redis.start("publisher")
        await recv_change(ws, "name", "Queued", timeout=30)
    finally:
        await ws.close()


async def test_web_restart_resumes_from_the_cursor(stack_on_private_redis, world):
    context = f"company:{world['acme']}"
    ws = await subscribed_client(stack_on_private_redis, context)
    await adb("UPDATE companies SET name = 'One' WHERE id = %s", [world["acme"]])
    cursor = (await recv_change(ws, "name", "One"))["seq_to"]
    await asyncio.to_thread(stack_on_private_redis.stop, "web")
    await ws.close()
    await adb("UPDATE companies SET name = 'Two' WHERE id = %s", [world["acme"]])
    await asyncio.to_thread(stack_on_private_redis.start, "web")
    deadline = time.monotonic() + 20
    while True:
        try:
            ws = await connect(stack_on_private_redis.ws_url)
            break
        except OSError:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    try:
        await recv(ws, "hello")
        await ws.send(json.dumps({"type": "subscribe", "contexts": [context], "since": cursor}))
        await recv(ws, "subscribed")
        batch = await recv_change(ws, "name", "Two")
        assert batch["prev_seq"] == cursor
    finally:
        await ws.close()
