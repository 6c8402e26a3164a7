"""Who sees what through the polling fallback: rejected contexts, staff tokens and
signed-in sessions, bad tokens, and the contexts of a `session` parameter."""

import uuid

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient
from rest_framework.authtoken.models import Token

from realtime.services import connection_contexts_set, connection_open
from tests.realtime.polling_client import LATEST, poll

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def make_token(username: str, *, staff: bool) -> str:
    def create():
        user = get_user_model().objects.create_user(username, password="x-pass-1", is_staff=staff)
        return Token.objects.create(user=user).key

    return await database_sync_to_async(create)()


async def test_bad_and_forbidden_contexts_are_rejected_like_subscribed(http, published):
    body = (
        await poll(
            http,
            0,
            contexts=(
                f"industry:steel,company:{published['hidden']},company:not-a-uuid,"
                "industry:nope,system,overview,industry:steel"
            ),
        )
    ).json()
    assert body["rejected"] == [
        {"context": f"company:{published['hidden']}", "code": "forbidden_context"},
        {"context": "company:not-a-uuid", "code": "invalid_context"},
        {"context": "industry:nope", "code": "forbidden_context"},
    ]
    assert {item["context"] for item in body["changes"]} <= {"industry:steel", "overview"}
    assert str(published["hidden"]) not in str(body["changes"])
    assert "Hidden Steel" not in str(body["changes"])


async def test_staff_token_sees_the_hidden_company(http, published):
    key = await make_token("ops", staff=True)
    context = f"company:{published['hidden']}"
    response = await poll(http, 0, contexts=context, headers={"Authorization": f"Token {key}"})
    body = response.json()
    assert body["rejected"] == []
    assert any(item["fields"].get("name") == "Hidden Steel" for item in body["changes"])
    assert "Authorization" in response.headers["vary"]


async def test_a_signed_in_staff_session_sees_the_hidden_company(published):
    def create():
        return get_user_model().objects.create_user("boss", password="x-pass-1", is_staff=True)

    user = await database_sync_to_async(create)()
    client = AsyncClient()
    await client.aforce_login(user)
    response = await client.get(f"{LATEST}0", {"contexts": f"company:{published['hidden']}"})
    assert response.status_code == 200
    assert response.json()["rejected"] == []


@pytest.mark.parametrize("header", ["Token not-a-token", "Token", "Token a b", "token " + "x" * 80])
async def test_a_bad_token_is_401(http, published, header):
    response = await poll(http, 0, contexts="overview", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert response.headers["www-authenticate"] == "Token"


async def test_another_scheme_is_anonymous_like_drf(http, published):
    response = await poll(http, 0, contexts="overview", headers={"Authorization": "Basic Zm9v"})
    assert response.status_code == 200


async def test_session_parameter_uses_the_sessions_contexts(http, published):
    session = uuid.uuid4().hex

    def open_session():
        connection_open(
            session=session, transport="sse", user=None, audience="public", client_address=None
        )
        connection_contexts_set(session=session, contexts=["industry:steel"])

    await database_sync_to_async(open_session)()
    body = (await poll(http, 0, session=session)).json()
    assert body["changes"] and {i["context"] for i in body["changes"]} == {"industry:steel"}
    # Explicit contexts win over the session's.
    explicit = (await poll(http, 0, session=session, contexts="overview")).json()
    assert {i["context"] for i in explicit["changes"]} == {"overview"}
    missing = await poll(http, 0, session=uuid.uuid4().hex)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    key = await make_token("someone", staff=False)
    foreign = await poll(http, 0, session=session, headers={"Authorization": f"Token {key}"})
    assert foreign.status_code == 404
