"""The REST endpoints of the live protocol as their tests call them: paths, users with
tokens, sessions opened as a stream would open them, and their rows."""

import uuid

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from changes.selectors import change_log_state
from realtime.models import ActiveConnection
from realtime.services import connection_contexts_set, connection_open

SUBSCRIBE = "/api/realtime/subscribe"
ACKNOWLEDGE = "/api/updates/acknowledge"
STATUS = "/api/updates/status"
HEALTH = "/api/realtime/health"


async def state():
    return await database_sync_to_async(change_log_state)()


async def make_user(username: str, *, staff: bool = False):
    def create():
        user = get_user_model().objects.create_user(username, password="x-pass-1", is_staff=staff)
        return user, Token.objects.create(user=user).key

    return await database_sync_to_async(create)()


async def open_session(*, transport="sse", user=None, contexts=()) -> str:
    session = uuid.uuid4().hex

    def create():
        connection_open(
            session=session,
            transport=transport,
            user=user,
            audience="public",
            client_address="127.0.0.1",
        )
        if contexts:
            connection_contexts_set(session=session, contexts=list(contexts))

    await database_sync_to_async(create)()
    return session


async def connection_row(session: str) -> ActiveConnection:
    return await ActiveConnection.objects.aget(id=session)


def token(key: str) -> dict:
    return {"Authorization": f"Token {key}"}
