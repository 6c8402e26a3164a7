"""Polls the fallback refuses: unparseable cursors and queries, repeated parameters,
too many contexts, other methods, hostile URLs (never a 500), and a flood (429)."""

import random

import pytest

from realtime import polling
from tests.realtime.conftest import make_client
from tests.realtime.polling_client import LATEST, poll

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.mark.parametrize(
    "cursor",
    [
        "abc",
        "-1",
        "1e9999",
        "x" * 5000,
        "2026-13-45T99:00",
        "99999999999999999999",
        "1.5",
        "%20",
        "0x10",
        "2026-02-30",
        "%FF",
        "0001-01-01T00:00:00+23:59:59",
        "NaN",
        "١٢٣",  # Arabic-Indic digits are digits to Python, not to us
        "5%0A",
        "2026-01-01T00:00:00Z%0A",
    ],
)
async def test_garbage_cursors_are_400(http, published, cursor):
    response = await http.get(f"{LATEST}{cursor}", params={"contexts": "overview"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_parameter"


@pytest.mark.parametrize(
    "params",
    [
        {"contexts": "overview", "limit": "0"},
        {"contexts": "overview", "limit": "5001"},
        {"contexts": "overview", "limit": "abc"},
        {"contexts": "overview", "limit": "1.5"},
        {"contexts": "overview", "limit": "-1"},
        {"contexts": "overview", "limit": ""},
        {"contexts": "overview", "limit": "99999999999999999999"},
        {"contexts": "overview", "wait": "26"},
        {"contexts": "overview", "wait": "25.001"},
        {"contexts": "overview", "wait": "-1"},
        {"contexts": "overview", "wait": "nan"},
        {"contexts": "overview", "wait": "inf"},
        {"contexts": "overview", "wait": "1e3"},
        {"contexts": "overview", "wait": ""},
        {"contexts": "overview", "epoch": "e" * 500},
        {"contexts": "overview", "colour": "blue"},
        {"contexts": "overview", "session": ""},
        {"contexts": ""},
        {"contexts": ",, ,"},
        {},
        {"limit": "5"},
    ],
)
async def test_unparseable_queries_are_400(http, published, params):
    response = await poll(http, 0, **params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_parameter"


async def test_repeated_parameters(http, published):
    twice = await http.get(f"{LATEST}0?contexts=overview&limit=1&limit=2")
    assert twice.status_code == 400
    joined = await http.get(f"{LATEST}0?contexts=overview&contexts=industry:steel")
    assert joined.status_code == 200
    assert {i["context"] for i in joined.json()["changes"]} == {"overview", "industry:steel"}


async def test_too_many_contexts(http, published):
    contexts = ",".join(f"industry:i{n}" for n in range(51))
    response = await poll(http, 0, contexts=contexts)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_subscriptions"


async def test_other_methods_are_405_json(http, published):
    response = await http.post(f"{LATEST}0?contexts=overview", json={})
    assert response.status_code == 405 and response.headers["allow"] == "GET"
    assert response.json()["error"]["code"] == "method_not_allowed"
    response = await http.delete(f"{LATEST}0?contexts=overview")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "url",
    [
        f"{LATEST}%FF?contexts=overview",
        f"{LATEST}0?contexts=%FF%FE",
        f"{LATEST}0?contexts=company:%00",
        f"{LATEST}0?contexts=company:" + "a" * 10000,
        f"{LATEST}0?contexts=overview&limit=%00",
        f"{LATEST}0?contexts=overview&wait=1e309",
        f"{LATEST}0?contexts=overview&epoch=%00",
        f"{LATEST}0?contexts=overview&session=" + "s" * 200,
        f"{LATEST}0?contexts=overview&session=%00",
        f"{LATEST}0?contexts=industry:%E2%80%AE",
        f"{LATEST}0?%00=1",
        f"{LATEST}0?contexts=overview&contexts=" + ",".join(["overview"] * 500),
        f"{LATEST}9223372036854775807?contexts=overview",
        f"{LATEST}9223372036854775808?contexts=overview",
        f"{LATEST}",
        f"{LATEST}0/extra",
    ],
)
async def test_never_a_500(http, published, url):
    response = await http.get(url)
    assert response.status_code < 500, response.text
    assert "error" in response.json() or response.status_code == 200


# -- rate limit ------------------------------------------------------------------------


async def test_a_flood_of_polls_gets_429_with_retry_after(published, settings):
    settings.REALTIME_POLL_RATE = "5/minute"
    address = f"192.0.2.{random.randrange(1, 255)}"
    async with make_client(f"{address}") as flooder, make_client() as bystander:
        # A fresh window for this address, whatever an earlier run left in Redis.
        rate = polling.parse_rate(settings.REALTIME_POLL_RATE)
        await polling._poll_limiter().clear(rate, "poll", address)
        statuses = [(await poll(flooder, 0, contexts="overview")).status_code for _ in range(8)]
        assert statuses[:5] == [200] * 5 and statuses[5:] == [429] * 3
        limited = await poll(flooder, 0, contexts="overview")
        assert limited.json()["error"]["code"] == "throttled"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # Another address is not affected.
        assert (await poll(bystander, 0, contexts="overview")).status_code == 200
