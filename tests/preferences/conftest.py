"""Fixtures and helpers of the refresh preference and policy tests (real PostgreSQL and
Redis): users, sessions and policy rows, and requests to the preference and policy API."""

import json

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.cached_db import SessionStore
from rest_framework.authtoken.models import Token

from preferences.models import ANALYST_GROUP, RefreshPolicy
from preferences.selectors import refresh_policy_table_forget
from tests.realtime.conftest import make_client

PREFERENCES = "/api/user/refresh-preferences"
POLICIES = "/api/admin/refresh-policies"


@pytest.fixture(autouse=True)
def fresh_policy_cache():
    """Each test starts and ends with an empty process cache of the policy table: tests
    write policies directly, and the next test's database has other rows."""
    refresh_policy_table_forget()
    yield
    refresh_policy_table_forget()


def user_with_token(username: str, *, staff: bool = False, analyst: bool = False):
    """A user and its API token (sync: wrap with database_sync_to_async in async tests)."""
    user = get_user_model().objects.create_user(username, password="x-pass-1", is_staff=staff)
    if analyst:
        user.groups.add(Group.objects.get_or_create(name=ANALYST_GROUP)[0])
    return user, Token.objects.create(user=user).key


def anonymous_session() -> str:
    """A stored browser session, as the site creates one; its key."""
    store = SessionStore()
    store.create()
    return store.session_key


def policy_set(user_type: str, category: str, **values) -> None:
    """Write one policy straight into the table (bypassing the service) and forget the
    cached table, as a policy_changed message would."""
    from preferences.defaults import POLICY_DEFAULTS

    RefreshPolicy.objects.update_or_create(
        user_type=user_type,
        category=category,
        defaults={**POLICY_DEFAULTS[(user_type, category)], **values},
    )
    refresh_policy_table_forget()


def token_header(key: str) -> dict:
    return {"Authorization": f"Token {key}"}


@pytest.fixture
async def http():
    async with make_client() as client:
        yield client


async def make_user(username: str, **kwargs) -> tuple:
    return await database_sync_to_async(user_with_token)(username, **kwargs)


@pytest.fixture
async def staff_auth() -> dict:
    """The Authorization header of a staff user, `ops`."""
    _, key = await make_user("ops", staff=True)
    return token_header(key)


async def put(http, path: str, body, headers=None):
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    return await http.put(
        path, content=content, headers={"Content-Type": "application/json", **(headers or {})}
    )


def assert_refused_with_reason(response, code: str, field: str, words: str) -> None:
    """A 400 with error `code` whose detail gives `field` a reason containing `words`."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert words in " ".join(error["detail"][field]), error
