"""`GET /api/realtime/live`, HAProxy's health check: 200 while the process serves, 503
once its hub is stopping (SIGTERM), and neither database nor Redis read."""

import pytest
from django.test import AsyncClient

from realtime.hub import get_hub
from realtime.services import SERVER

pytestmark = pytest.mark.asyncio

LIVE = "/api/realtime/live"


async def test_serving_then_draining():
    # No `db` fixture: a query would fail the test (pytest-django blocks it).
    client = AsyncClient()
    response = await client.get(LIVE)
    assert response.status_code == 200
    assert response.json() == {"status": "serving", "process": SERVER}
    assert response["Cache-Control"] == "no-store"
    hub = get_hub()
    hub.stopping = True  # what SIGTERM's hand-over sets (realtime/hub_housekeeping.py)
    try:
        response = await client.get(LIVE)
    finally:
        hub.stopping = False
    assert response.status_code == 503
    assert response.json() == {"status": "draining", "process": SERVER}


async def test_other_methods_get_405():
    response = await AsyncClient().post(LIVE)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
