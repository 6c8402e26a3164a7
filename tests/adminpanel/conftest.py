"""Fixtures of the operators' tests: users with tokens, maintenance mode reset."""

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from adminpanel.selectors import Maintenance, maintenance_cache_set
from tests.realtime.conftest import greeted, receive


@pytest.fixture(autouse=True)
def maintenance_off_after():
    """Tests switch maintenance on; the database is emptied after each, but this process's
    cached mode would outlive it for MAINTENANCE_CACHE_S: reset it both ways."""
    maintenance_cache_set(Maintenance())
    yield
    maintenance_cache_set(Maintenance())


def user_with_token(username: str, *, staff: bool = False) -> tuple:
    user = get_user_model().objects.create_user(username, password="x-pass-1", is_staff=staff)
    return user, Token.objects.create(user=user).key


async def auser_with_token(username: str, *, staff: bool = False) -> tuple:
    return await database_sync_to_async(user_with_token)(username, staff=staff)


def token_header(key: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Token {key}".encode())


async def connected(headers=None):
    """A WebSocket client past its `hello`."""
    communicator, _ = await greeted(headers)
    return communicator


async def next_of(communicator, kind: str, timeout: float = 5) -> dict:
    """The next message of `kind`, skipping heartbeats and other kinds listed as noise."""
    while True:
        message = await receive(communicator, timeout)
        if message["type"] == kind:
            return message
        assert message["type"] in ("heartbeat", "monitor"), message
