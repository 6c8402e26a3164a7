"""One change across each restart, the short way: Redis (with no later write to reveal
the gap), the publisher, and a graceful (SIGTERM) restart of the web server. The
mid-stream kills under continuous writes are in the other tests of this directory."""

import asyncio
import contextlib
import json
import signal
import time

import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import ClientConnection, connect

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


async def connected(url: str, patience_s: float) -> ClientConnection:
    """A WebSocket connection, tried again while nothing listens, for up to `patience_s`."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return await connect(url)
        except OSError:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def subscribed_client(stack, context: str, *, patience_s: float = 0.0, **subscribe):
    """A WebSocket client subscribed to `context` (`subscribe`: more of the message, such
    as `since`), closed at the end."""
    ws = await connected(stack.ws_url, patience_s)
    try:
        await recv(ws, "hello")
        await ws.send(json.dumps({"type": "subscribe", "contexts": [context], **subscribe}))
        await recv(ws, "subscribed")
        yield ws
    finally:
        await ws.close()


async def rename_acme(world, name: str) -> None:
    await adb("UPDATE companies SET name = %s WHERE id = %s", [name, world["acme"]])


async def test_redis_restart_loses_nothing(stack_on_private_redis, private_redis, world):
    context = f"company:{world['acme']}"
    async with subscribed_client(stack_on_private_redis, context) as ws:
        await rename_acme(world, "Before")
        await recv_change(ws, "name", "Before")

        private_redis.kill()
        # Published while Redis is away: the frame is lost on the way.
        await rename_acme(world, "During")
        await asyncio.sleep(1.5)
        private_redis.start()

        # No further write: the hub's head check reads the lost frame from the log.
        batch = await recv_change(ws, "name", "During", timeout=30)
        assert batch["context"] == context
        await rename_acme(world, "After")
        await recv_change(ws, "name", "After", timeout=30)


async def test_publisher_restart_loses_nothing(stack_on_private_redis, world):
    async with subscribed_client(stack_on_private_redis, f"company:{world['acme']}") as ws:
        stack_on_private_redis.stop("publisher", sig=signal.SIGKILL)
        await rename_acme(world, "Queued")
        await asyncio.sleep(0.5)
        stack_on_private_redis.start("publisher")
        await recv_change(ws, "name", "Queued", timeout=30)


async def test_web_restart_resumes_from_the_cursor(stack_on_private_redis, world):
    context = f"company:{world['acme']}"
    async with subscribed_client(stack_on_private_redis, context) as ws:
        await rename_acme(world, "One")
        cursor = (await recv_change(ws, "name", "One"))["seq_to"]
        await asyncio.to_thread(stack_on_private_redis.stop, "web")
    await rename_acme(world, "Two")
    await asyncio.to_thread(stack_on_private_redis.start, "web")
    async with subscribed_client(
        stack_on_private_redis, context, patience_s=20, since=cursor
    ) as ws:
        batch = await recv_change(ws, "name", "Two")
        assert batch["prev_seq"] == cursor
