"""ETags of the polling fallback: 304 for an unchanged answer, an ETag that covers the
query as well as the body, and 304 after a long poll waited in vain."""

import time

import pytest

from tests.realtime.conftest import db, publish
from tests.realtime.polling_client import head, poll

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def test_etag_and_304(http, published):
    first = await poll(http, 0, contexts="industry:steel")
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert "no-cache" in first.headers["cache-control"]
    again = await poll(http, 0, contexts="industry:steel")
    assert again.headers["etag"] == etag
    cached = await poll(http, 0, headers={"If-None-Match": etag}, contexts="industry:steel")
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["etag"] == etag
    weak_in_a_list = await poll(
        http, 0, headers={"If-None-Match": f'"nope", W/{etag}'}, contexts="industry:steel"
    )
    assert weak_in_a_list.status_code == 304
    other = await poll(http, 0, headers={"If-None-Match": '"nope"'}, contexts="industry:steel")
    assert other.status_code == 200


async def test_the_etag_covers_the_query_not_only_the_body(http, published):
    """ConditionalGetMiddleware would hash the body alone; ours also covers the query."""
    small = await poll(http, 0, contexts="industry:steel", limit=4000)
    large = await poll(http, 0, contexts="industry:steel", limit=5000)
    assert small.content == large.content
    assert small.headers["etag"] != large.headers["etag"]
    crossed = await poll(
        http, 0, headers={"If-None-Match": small.headers["etag"]}, contexts="industry:steel"
    )
    assert crossed.status_code == 200


async def test_a_new_change_changes_the_etag(http, published):
    first = await poll(http, 0, contexts="industry:steel")
    await db("UPDATE companies SET name = 'Renamed' WHERE id = %s", [published["acme"]])
    await publish()
    second = await poll(
        http, 0, headers={"If-None-Match": first.headers["etag"]}, contexts="industry:steel"
    )
    assert second.status_code == 200
    assert second.headers["etag"] != first.headers["etag"]


async def test_304_after_waiting_in_vain(http, published):
    cursor = await head()
    first = await poll(http, cursor, contexts="industry:steel")
    assert first.json()["changes"] == []
    started = time.monotonic()
    cached = await poll(
        http,
        cursor,
        headers={"If-None-Match": first.headers["etag"]},
        contexts="industry:steel",
        wait="0.6",
    )
    assert cached.status_code == 304
    assert time.monotonic() - started >= 0.55
