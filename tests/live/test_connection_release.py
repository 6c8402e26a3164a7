"""Connections that vanish are freed by the web server at once, not at its next full
garbage collection: clients that drop their connection with a TCP reset (no close frame,
as when a network goes away) and reconnect, cycle after cycle, leave the process holding
WebSocket connection objects for its open connections only.

The web server runs as the Procfile starts it, with its tuned garbage collector
(realtime/server.py): a full collection is rare there, so whatever an ended connection
left in a reference cycle stays, and shows in `carbon_realtime_websocket_objects` above
the open connections (the churn soak measured it as memory growing with every
reconnection)."""

import asyncio
import contextlib
import json
import socket
import struct
import time

import httpx
import pytest
from websockets.asyncio.client import connect

pytestmark = [pytest.mark.timeout(180), pytest.mark.asyncio]

CLIENTS = 40
CYCLES = 5
# SO_LINGER on, 0 s: closing sends a TCP reset, no close frame and no FIN.
LINGER_RESET = struct.pack("ii", 1, 0)


def metric(text: str, name: str, labels: str = "") -> float:
    """Sum of the samples of metric `name` (with `labels` among theirs) in a Prometheus
    text answer."""
    total = 0.0
    for line in text.splitlines():
        named = line.startswith(name + "{") or line.startswith(name + " ")
        if named and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def subscribed_client(url: str):
    ws = await connect(url, ping_interval=None, compression=None)
    hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert hello["type"] == "hello"
    await ws.send(json.dumps({"type": "subscribe", "contexts": ["overview"], "ref": 1}))
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message["type"] == "subscribed":
            return ws


def reset(ws) -> None:
    sock = ws.transport.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    ws.transport.abort()


async def server_figures(http_url: str) -> dict:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{http_url}/metrics", timeout=10)).text
    return {
        "sessions": metric(text, "carbon_realtime_process_connections", 'transport="websocket"'),
        "objects": metric(text, "carbon_realtime_websocket_objects"),
    }


async def test_connections_reset_by_their_clients_are_freed_at_once(live_stack):
    clients = [await subscribed_client(live_stack.ws_url) for _ in range(CLIENTS)]
    for _ in range(CYCLES):
        for ws in clients:
            reset(ws)
        clients = [await subscribed_client(live_stack.ws_url) for _ in range(CLIENTS)]

    # The server hears of the resets at once; its sessions end within moments.
    deadline = time.monotonic() + 10
    while True:
        figures = await server_figures(live_stack.http_url)
        if figures["sessions"] == CLIENTS and figures["objects"] <= CLIENTS:
            break
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    try:
        # Nothing of the 200 ended connections is left: one object per open connection.
        assert figures == {"sessions": CLIENTS, "objects": CLIENTS}, figures
    finally:
        for ws in clients:
            reset(ws)
