"""`GET /api/updates/status` and `GET /api/realtime/health` on the real ASGI
application, PostgreSQL and Redis: the log and the publisher's backlog, and each
check failing on its own."""

import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.db import connections
from django.db.utils import load_backend

from changes.selectors import publisher_backlog
from realtime import health
from tests.realtime.conftest import db, publish
from tests.realtime.rest_endpoints import HEALTH, STATUS, open_session, state, token

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


# Nothing listens here: connections are refused at once.
CLOSED = "127.0.0.1:1"


# -- status ----------------------------------------------------------------------------


async def test_status_reports_the_log_and_the_backlog(http, world):
    body = (await http.get(STATUS)).json()
    assert set(body) == {
        "epoch",
        "head_seq",
        "pending",
        "pending_capped",
        "lag_ms",
        "maintenance",
        "last_published_at",
    }
    [(unprocessed,)] = await db("SELECT count(*) FROM data_changes WHERE processed_at IS NULL")
    assert body["pending"] == unprocessed > 0 and body["pending_capped"] is False
    assert body["lag_ms"] >= 0
    assert body["maintenance"] is False

    await publish()
    body = (await http.get(STATUS)).json()
    log = await state()
    assert body["epoch"] == log.epoch and body["head_seq"] == log.head_seq > 0
    assert body["pending"] == 0 and body["lag_ms"] == 0
    assert body["last_published_at"].endswith("Z")


async def test_status_lag_is_the_age_of_the_oldest_waiting_change(http, published):
    await db("UPDATE companies SET name = 'Waiting' WHERE id = %s", [published["acme"]])
    await db(
        "UPDATE data_changes SET created_at = clock_timestamp() - interval '90 seconds'"
        " WHERE processed_at IS NULL"
    )
    body = (await http.get(STATUS)).json()
    assert body["pending"] == 1
    assert 90_000 <= body["lag_ms"] < 120_000


async def test_pending_is_counted_up_to_the_cap(published):
    await db("UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1")
    backlog = await database_sync_to_async(publisher_backlog)(cap=2)
    assert backlog.pending == 2 and backlog.capped is True


# -- health ----------------------------------------------------------------------------


async def test_health_ok(http, published):
    await open_session(transport="websocket")
    await open_session(transport="sse")
    await open_session(transport="sse")
    response = await http.get(HEALTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    checks = body["checks"]
    assert set(checks) == {"database", "redis", "channel_layer", "publisher"}
    for name in ("database", "redis", "channel_layer"):
        assert checks[name]["ok"] is True and checks[name]["latency_ms"] >= 0
    assert checks["publisher"] == {"ok": True, "lag_ms": 0, "pending": 0}
    assert body["connections"] == {"websocket": 1, "sse": 2, "polling": 0, "total": 3}
    assert response.headers["cache-control"] == "no-store"


async def test_health_is_503_when_the_publisher_lags(http, published):
    await db("UPDATE companies SET name = 'Stuck' WHERE id = %s", [published["acme"]])
    await db(
        "UPDATE data_changes SET created_at = clock_timestamp() - interval '1 minute'"
        " WHERE processed_at IS NULL"
    )
    response = await http.get(HEALTH)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["publisher"]["ok"] is False
    assert body["checks"]["publisher"]["lag_ms"] >= 60_000
    assert body["checks"]["database"]["ok"] is True
    await publish()
    assert (await http.get(HEALTH)).status_code == 200


async def test_health_ignores_credentials(http, published):
    response = await http.get(HEALTH, headers=token("not-a-token"))
    assert response.status_code == 200


async def test_redis_check_fails_on_a_closed_port(published):
    result = await health.redis_check(url=f"redis://{CLOSED}/0", timeout=1)
    assert result["ok"] is False and result["error"]
    assert CLOSED not in json.dumps(result)


async def test_channel_layer_check_fails_on_a_closed_port(published):
    layer = RedisPubSubChannelLayer(hosts=[f"redis://{CLOSED}/0"])
    try:
        result = await health.channel_layer_check(layer=layer, timeout=1)
    finally:
        await layer.flush()
    assert result["ok"] is False and result["error"]


async def test_channel_layer_check_leaves_no_channel_behind(published):
    layer = get_channel_layer()
    assert (await health.channel_layer_check(layer=layer))["ok"] is True
    inner = layer._get_layer()
    assert not [name for name in inner.channels if "health." in name]


async def test_database_check_fails_on_a_closed_port(published):
    settings_dict = {**connections["default"].settings_dict, "HOST": "127.0.0.1", "PORT": 1}
    settings_dict["OPTIONS"] = {
        key: value for key, value in settings_dict["OPTIONS"].items() if key != "pool"
    }
    backend = load_backend(settings_dict["ENGINE"])
    database = backend.DatabaseWrapper(settings_dict, alias="closed-port")
    result = await health.database_check(database=database, timeout=2)
    assert result["ok"] is False and result["error"]
    assert (await health.database_check())["ok"] is True


async def test_check_timeouts(published):
    """A check that takes longer than its timeout is a failure, not a hang."""
    result = await health.redis_check(timeout=0.000001)
    assert result == {"ok": False, "error": "timeout"}
