"""End to end over the real web server and publisher processes: a raw SQL write becomes a
notification on a real WebSocket and a real SSE stream; a staff broadcast reaches them."""

import asyncio
import json
import time

import httpx
import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect

from tests.helpers import sql
from tests.live.test_websocket_live import recv
from tests.notifications.conftest import make_user

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio]

adb = database_sync_to_async(sql)
# A notification comes after the publisher ran the rules on its batch, on a loaded machine.
NOTIFICATION_TIMEOUT_S = 15


async def sse_event(lines, kind: str, timeout: float = NOTIFICATION_TIMEOUT_S) -> dict:
    """The data of the next SSE event of `kind`."""
    deadline = time.monotonic() + timeout
    event = None
    while True:
        line = await asyncio.wait_for(lines.__anext__(), deadline - time.monotonic())
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == kind:
            return json.loads(line.removeprefix("data: "))


async def test_notifications_over_the_real_stack(live_stack, world):
    _, staff_key = await make_user("live-operator", staff=True)
    acme = f"company:{world['acme']}"
    async with (
        connect(live_stack.ws_url) as ws,
        httpx.AsyncClient(base_url=live_stack.http_url, timeout=30) as http,
        http.stream("GET", f"/api/stream/dashboard?contexts={acme}") as stream,
    ):
        lines = stream.aiter_lines()
        await sse_event(lines, "subscribed")
        await recv(ws, "hello")
        await ws.send(json.dumps({"type": "subscribe", "contexts": [acme]}))
        await recv(ws, "subscribed")

        await adb(
            "UPDATE emission_records SET scope1_tonnes = 5000 WHERE company_id = %s"
            " AND year = 2024",
            [world["acme"]],
        )
        note = await recv(ws, "notification", timeout=NOTIFICATION_TIMEOUT_S)
        assert note["kind"] == "total_move" and note["context"] == acme
        assert note["level"] == "critical" and note["requires_ack"] is True
        assert await sse_event(lines, "notification") == note

        response = await http.post(
            "/api/admin/updates/broadcast",
            json={"level": "info", "title": "Live hello", "body": "From the operators."},
            headers={"Authorization": f"Token {staff_key}"},
        )
        assert response.status_code == 201, response.text
        announcement = response.json()
        assert await recv(ws, "notification", timeout=NOTIFICATION_TIMEOUT_S) == announcement
        assert await sse_event(lines, "notification") == announcement
