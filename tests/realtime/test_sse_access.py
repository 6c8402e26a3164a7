"""Which requests open an SSE stream and what it carries: bad queries, tokens and
methods refused before the stream, the per-address limit, hidden companies by
audience, and the paths that reach Django instead."""

import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from config.asgi import application
from tests.realtime.conftest import db, publish
from tests.realtime.sse_stream import PATH, Stream, company, refused

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("layer_prefix"),
]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", "invalid_parameter"),
        ("contexts=", "invalid_parameter"),
        ("contexts=,%20,", "invalid_parameter"),
        ("since=3", "invalid_parameter"),
        ("contexts=overview&since=-1", "invalid_parameter"),
        ("contexts=overview&since=abc", "invalid_parameter"),
        ("contexts=overview&since=1.5", "invalid_parameter"),
        ("contexts=overview&since=99999999999999999999", "invalid_parameter"),
        ("contexts=overview&since=1&since=2", "invalid_parameter"),
        ("contexts=%FF%FE", "invalid_parameter"),
        ("contexts=overview&epoch=" + "e" * 200, "invalid_parameter"),
        ("contexts=overview&pad=" + "x" * (9 * 1024), "invalid_parameter"),
        (
            "contexts=" + ",".join(f"industry:i{n}" for n in range(60)),
            "too_many_subscriptions",
        ),
    ],
)
async def test_bad_queries_are_400_before_the_stream(world, query, code):
    status, body, _ = await refused(query)
    assert status == 400
    assert body["error"]["code"] == code and body["error"]["detail"]


async def test_bad_token_is_401(world):
    status, body, headers = await refused(
        "contexts=overview", headers=[(b"authorization", b"Token wrong-key")]
    )
    assert status == 401 and body["error"]["code"] == "authentication_failed"
    assert headers[b"www-authenticate"] == b"Token"


async def test_other_methods_are_405(world):
    status, body, headers = await refused("contexts=overview", method="POST")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    assert headers[b"allow"] == b"GET"


async def test_too_many_streams_from_one_address_are_429(world, settings):
    settings.REALTIME_MAX_CONNECTIONS_PER_ADDRESS = 1
    first = Stream("contexts=overview")
    await first.opened()
    status, body, headers = await refused("contexts=overview")
    assert status == 429 and body["error"]["code"] == "rate_limited"
    assert int(headers[b"retry-after"]) > 0
    await first.close()


async def test_anonymous_never_receives_a_hidden_company(world):
    await publish()
    stream = Stream(
        f"contexts={company(world, 'hidden')},industry:steel,companies,overview&since=0"
    )
    _, subscribed = await stream.opened()
    assert company(world, "hidden") not in subscribed["contexts"]
    await db("UPDATE companies SET name = 'Secret Rename' WHERE id = %s", [world["hidden"]])
    await db(
        "UPDATE emission_records SET scope1_tonnes = 5 WHERE company_id = %s", [world["hidden"]]
    )
    await db("UPDATE companies SET name = 'Visible Rename' WHERE id = %s", [world["acme"]])
    await publish()
    await stream.collect()
    text = stream.raw.decode()
    assert "Visible Rename" in text
    for secret in ("Secret Rename", "Hidden Steel", str(world["hidden"])):
        # Only the rejection of the requested context names it.
        assert text.count(secret) == (1 if secret == str(world["hidden"]) else 0), secret
    await stream.close()


async def test_staff_token_receives_a_hidden_company(world):
    def make_token():
        user = get_user_model().objects.create_user("sse-ops", password="x-pass-1", is_staff=True)
        return Token.objects.create(user=user).key

    key = await database_sync_to_async(make_token)()
    await publish()
    hidden = company(world, "hidden")
    stream = Stream(f"contexts={hidden}", headers=[(b"authorization", f"Token {key}".encode())])
    _, subscribed = await stream.opened()
    assert subscribed["contexts"] == [hidden] and subscribed["rejected"] == []
    await db("UPDATE companies SET name = 'Still Hidden' WHERE id = %s", [world["hidden"]])
    await publish()
    batch = await stream.until("batch")
    assert batch["message"]["changes"][0]["fields"]["name"] == "Still Hidden"
    await stream.close()


async def test_trailing_slash_and_other_paths_reach_django(world):
    stream = Stream("contexts=overview", path=PATH + "/")
    await stream.opened()
    await stream.close()
    django = HttpCommunicator(
        application, "GET", "/api/companies/", headers=[(b"host", b"testserver")]
    )
    response = await django.get_response(5)
    assert response["status"] == 200
    assert json.loads(response["body"])
