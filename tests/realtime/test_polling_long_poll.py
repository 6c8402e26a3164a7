"""Long polls (`wait=`): answered when a change is published, empty at the timeout,
at once when changes are waiting, ended by a server stop, and never holding a
synchronous middleware's thread."""

import asyncio
import time

import pytest

from realtime import polling
from realtime.hub import get_hub
from tests.realtime.conftest import db, publish
from tests.realtime.polling_client import head, poll

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def test_long_poll_is_answered_when_a_change_is_published(http, published):
    cursor = await head()
    request = asyncio.create_task(poll(http, cursor, contexts="industry:steel", wait="10"))
    await asyncio.sleep(0.3)
    assert not request.done()
    started = time.monotonic()
    await db("UPDATE companies SET name = 'Woken Steel' WHERE id = %s", [published["acme"]])
    await publish()
    response = await asyncio.wait_for(request, 5)
    assert time.monotonic() - started < 3
    body = response.json()
    assert any(item["fields"].get("name") == "Woken Steel" for item in body["changes"])
    assert body["next"] == await head()
    # The waiter left the hub.
    hub = get_hub()
    assert not any(
        isinstance(member, polling.PollWaiter)
        for members in hub.members.values()
        for member in members
    )


async def test_long_poll_woken_with_if_none_match_still_answers_the_news(http, published):
    cursor = await head()
    empty = await poll(http, cursor, contexts="industry:steel")
    request = asyncio.create_task(
        poll(
            http,
            cursor,
            headers={"If-None-Match": empty.headers["etag"]},
            contexts="industry:steel",
            wait="10",
        )
    )
    await asyncio.sleep(0.3)
    await db("UPDATE companies SET name = 'News' WHERE id = %s", [published["acme"]])
    await publish()
    response = await asyncio.wait_for(request, 5)
    assert response.status_code == 200 and response.json()["changes"]


async def test_long_poll_times_out_empty_with_next_at_the_head(http, published):
    cursor = await head()
    request = asyncio.create_task(
        poll(http, cursor, contexts=f"company:{published['beta']}", wait="1")
    )
    await asyncio.sleep(0.2)
    # Published elsewhere: does not answer this poll, but moves the head.
    await db("UPDATE companies SET name = 'Other News' WHERE id = %s", [published["acme"]])
    await publish()
    started = time.monotonic()
    response = await asyncio.wait_for(request, 5)
    assert time.monotonic() - started > 0.5
    body = response.json()
    assert body["changes"] == [] and body["reset"] is None
    assert body["next"] == await head() > cursor


async def test_long_poll_with_changes_waiting_answers_at_once(http, published):
    started = time.monotonic()
    response = await poll(http, 0, contexts="industry:steel", wait="10")
    assert time.monotonic() - started < 3
    assert response.json()["changes"]


async def test_long_poll_ends_when_the_server_stops(http, published):
    cursor = await head()
    request = asyncio.create_task(poll(http, cursor, contexts="industry:steel", wait="10"))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await get_hub().shutdown()
    response = await asyncio.wait_for(request, 5)
    assert time.monotonic() - started < 3
    assert response.status_code == 200 and response.json()["changes"] == []


def test_every_middleware_keeps_the_chain_async():
    """A synchronous-only middleware would hold the process's shared thread around every
    long poll for its whole wait (realtime/handlers.py): every one must be async capable."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    for path in settings.MIDDLEWARE:
        assert getattr(import_string(path), "async_capable", False), path
