"""Helpers for notification tests: live clients of every transport on the real ASGI
application, PostgreSQL and Redis, and the publisher's path including notifications."""

import copy
import json
import uuid

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from rest_framework.authtoken.models import Token

from changes.publisher import change_batch_publish, frames_fan_out
from notifications.models import NotificationReceipt, UpdateNotification
from realtime.notification_delivery import attempts_flush, batch_notifications_send
from tests.live.conftest import live_stack  # noqa: F401 (the real web server and publisher)
from tests.realtime.conftest import ORIGIN, connect, receive


@pytest.fixture(autouse=True)
def layer_prefix(settings):
    """A channel-layer prefix of this test alone: control messages go to the `system`
    group, which every test run sharing this Redis would otherwise hear."""
    prefix = f"{settings.REDIS_PREFIX}-notif-{uuid.uuid4().hex[:12]}"
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    layers["default"]["CONFIG"]["prefix"] = f"{prefix}:layer"
    settings.CHANNEL_LAYERS = layers
    return prefix


async def publish():
    """What run_publisher does: publish, send the frames, then the notifications."""
    result = await database_sync_to_async(change_batch_publish)()
    if result and result.frames:
        await frames_fan_out(result.frames)
    if result:
        await batch_notifications_send(result)
    return result


def _user(username: str, staff: bool) -> tuple:
    user = get_user_model().objects.create_user(username, password="x-pass-1", is_staff=staff)
    return user, Token.objects.create(user=user).key


async def make_user(username: str, *, staff: bool = False) -> tuple:
    """A user and their API token."""
    return await database_sync_to_async(_user)(username, staff)


def auth(key: str) -> list:
    return [(b"authorization", f"Token {key}".encode())]


async def anonymous_cookie() -> list:
    """Handshake headers of an anonymous browser with a Django session."""

    def create() -> str:
        store = SessionStore()
        store.create()
        return store.session_key

    key = await database_sync_to_async(create)()
    return [ORIGIN, (b"cookie", f"sessionid={key}".encode())]


class Live:
    """One WebSocket connection, read message by message."""

    def __init__(self, communicator, hello: dict):
        self.communicator = communicator
        self.hello = hello
        self.session = hello["session"]

    async def send(self, message: dict) -> None:
        await self.communicator.send_json_to(message)

    async def until(self, kind: str, timeout: float = 5) -> dict:
        """The next message of `kind`, skipping the others."""
        while True:
            message = json.loads(await self.communicator.receive_from(timeout=timeout))
            if message["type"] == kind:
                return message

    async def subscribe(self, *contexts: str) -> dict:
        await self.send({"type": "subscribe", "contexts": list(contexts)})
        return await self.until("subscribed")

    async def quiet(self, timeout: float = 0.5) -> list[dict]:
        """Every message until nothing arrives for `timeout` seconds."""
        messages = []
        while not await self.communicator.receive_nothing(timeout=timeout):
            messages.append(json.loads(await self.communicator.receive_from()))
        return messages

    async def notifications(self, timeout: float = 0.5) -> list[dict]:
        return [m for m in await self.quiet(timeout) if m["type"] == "notification"]

    async def close(self) -> None:
        await self.communicator.disconnect()


async def live(headers=None, *contexts: str) -> Live:
    communicator, connected, _ = await connect(headers=headers or [ORIGIN])
    assert connected
    hello = await receive(communicator)
    assert hello["type"] == "hello"
    client = Live(communicator, hello)
    if contexts:
        await client.subscribe(*contexts)
    return client


async def notification_row(notification_id: str) -> UpdateNotification:
    return await UpdateNotification.objects.aget(id=notification_id)


async def receipts(notification_id: str) -> dict[str, NotificationReceipt]:
    """Receipts by client key, after this process's attempts were written."""
    await attempts_flush()
    rows = NotificationReceipt.objects.filter(notification_id=notification_id)
    return {row.client_key: row async for row in rows}
