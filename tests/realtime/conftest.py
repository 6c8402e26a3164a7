"""Helpers for the live transports: communicators on the real ASGI application."""

import copy
import json
import random
import uuid

import httpx
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from changes.publisher import change_batch_publish, frames_fan_out
from config.asgi import application
from tests.helpers import sql

ORIGIN = (b"origin", b"http://127.0.0.1")


async def connect(headers=None, path="/ws/dashboard/updates"):
    communicator = WebsocketCommunicator(application, path, headers=headers or [ORIGIN])
    connected, code = await communicator.connect(timeout=5)
    return communicator, connected, code


async def receive(communicator, timeout=5) -> dict:
    return json.loads(await communicator.receive_from(timeout=timeout))


async def receive_until(communicator, kind: str, timeout=5) -> dict:
    """The next message of `kind`, skipping heartbeats."""
    while True:
        message = await receive(communicator, timeout)
        if message["type"] == kind:
            return message
        assert message["type"] == "heartbeat", message


async def subscribe(communicator, contexts, **extra) -> dict:
    """Subscribe a WebSocket client to `contexts`; the `subscribed` reply."""
    await communicator.send_json_to({"type": "subscribe", "contexts": contexts, **extra})
    return await receive_until(communicator, "subscribed")


async def greeted(headers=None) -> tuple[WebsocketCommunicator, dict]:
    """A WebSocket client past its `hello`, and that hello."""
    communicator, connected, _ = await connect(headers=headers)
    assert connected
    hello = await receive(communicator)
    assert hello["type"] == "hello"
    return communicator, hello


async def db(statement, params=None):
    return await database_sync_to_async(sql)(statement, params)


async def publish():
    """Publish what is pending and fan it out, as run_publisher does."""
    result = await database_sync_to_async(change_batch_publish)()
    if result and result.frames:
        await frames_fan_out(result.frames)
    return result


@pytest.fixture
async def client(world):
    communicator, _ = await greeted()
    yield communicator
    await communicator.disconnect()


def make_client(address: str | None = None) -> httpx.AsyncClient:
    """An HTTP client on the ASGI application, from an address of its own: rate limits
    and throttles of one test (or of other test runs sharing Redis) never meet another."""
    address = (
        address or f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(256)}"
    )
    transport = httpx.ASGITransport(app=application, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30)


@pytest.fixture
async def http():
    async with make_client() as client:
        yield client


@pytest.fixture
async def published(world):
    """The world, published: every insert has its seq."""
    await publish()
    return world


@pytest.fixture
def layer_prefix(settings):
    """A channel-layer prefix of this test alone (the SSE tests use it for every test):
    other test runs sharing the Redis publish to the same context groups (`industry:steel`
    of their own `world`)."""
    prefix = f"{settings.REDIS_PREFIX}-sse-{uuid.uuid4().hex[:12]}"
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    layers["default"]["CONFIG"]["prefix"] = f"{prefix}:layer"
    settings.CHANNEL_LAYERS = layers
    return prefix
