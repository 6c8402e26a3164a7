"""Control messages reach exactly the sessions they target, on the real channel layer."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from rest_framework.authtoken.models import Token

from common.identity import client_key
from realtime.control import control_handler, control_send
from tests.realtime.conftest import ORIGIN, connect, receive

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@control_handler("test_echo")
async def _echo(session, payload: dict) -> None:
    await session.send(json.dumps({"type": "echo", "client": session.client_key, **payload}))


def _token(username: str) -> tuple[int, str]:
    user = get_user_model().objects.create_user(username, password="x-pass-1")
    return user.pk, Token.objects.create(user=user).key


def _anonymous_session() -> str:
    store = SessionStore()
    store.create()
    return store.session_key


async def _connected(headers):
    communicator, connected, _ = await connect(headers=headers)
    assert connected
    assert (await receive(communicator))["type"] == "hello"
    return communicator


def test_client_key_names_users_and_anonymous_sessions(regular_user):
    assert client_key(regular_user, "abc") == f"user:{regular_user.pk}"
    assert client_key(None, "abc12345") == "anon:abc12345"
    assert client_key(None, None) is None


async def test_control_reaches_only_the_targeted_clients(world):
    alice_id, alice_token = await database_sync_to_async(_token)("alice")
    _, bob_token = await database_sync_to_async(_token)("bob")
    session_key = await database_sync_to_async(_anonymous_session)()
    alice_a = await _connected([(b"authorization", f"Token {alice_token}".encode())])
    alice_b = await _connected([(b"authorization", f"Token {alice_token}".encode())])
    bob = await _connected([(b"authorization", f"Token {bob_token}".encode())])
    anonymous = await _connected([ORIGIN, (b"cookie", f"sessionid={session_key}".encode())])
    try:
        await control_send("test_echo", {"n": 1}, clients=[f"user:{alice_id}"])
        for communicator in (alice_a, alice_b):
            assert await receive(communicator) == {
                "type": "echo",
                "client": f"user:{alice_id}",
                "n": 1,
            }
        assert await bob.receive_nothing(timeout=0.3)
        assert await anonymous.receive_nothing(timeout=0.1)

        await control_send("test_echo", {"n": 2}, clients=[f"anon:{session_key}"])
        assert await receive(anonymous) == {"type": "echo", "client": f"anon:{session_key}", "n": 2}
        assert await bob.receive_nothing(timeout=0.3)

        await control_send("test_echo", {"n": 3})
        received = await asyncio.gather(*(receive(c) for c in (alice_a, alice_b, bob, anonymous)))
        assert [message["n"] for message in received] == [3, 3, 3, 3]
    finally:
        for communicator in (alice_a, alice_b, bob, anonymous):
            await communicator.disconnect()


async def test_an_unknown_action_is_ignored(client):
    await control_send("no_such_action", {})
    assert await client.receive_nothing(timeout=0.3)
