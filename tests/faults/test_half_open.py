"""Half-open connections: the peer neither reads nor sends, and no FIN comes. The server
finds them and releases their sessions within two ping (WebSocket) or heartbeat (SSE)
intervals.

- A client process stopped with SIGSTOP: its kernel still acknowledges, so only the
  protocol can tell. WebSocket pings go unanswered and the server closes (uvicorn's
  ping timeout). An SSE stream has no way back from the client at all: a stopped reader
  is found once its unsent bytes pass REALTIME_MAX_PENDING_BYTES (tests/faults/
  test_slow_clients.py), and when its machine is gone, as below.
- A peer that vanished (its link went down: a phone out of coverage, a laptop asleep):
  nothing acknowledges any more, and TCP_USER_TIMEOUT (REALTIME_UNACKED_TIMEOUT_S) ends
  the connection once a heartbeat is left unacknowledged. The client runs in a network
  namespace of the test's own, behind a veth pair whose far end is taken down.
"""

import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from tests.faults.test_storm import metric
from tests.helpers import sql
from tests.live.conftest import stack_env, stack_start

pytestmark = [pytest.mark.timeout(120)]

INTERVAL_S = 1.0

WEBSOCKET_CLIENT = """
import asyncio, json, sys
from websockets.asyncio.client import connect
async def main():
    async with connect(sys.argv[1], ping_interval=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "contexts": ["overview"]}))
        async for raw in ws:
            if json.loads(raw)["type"] == "subscribed":
                print("SUBSCRIBED", flush=True)
asyncio.run(main())
"""

SSE_CLIENT = """
import sys, httpx
with httpx.stream("GET", sys.argv[1], timeout=None) as response:
    for line in response.iter_lines():
        if line.startswith("event: subscribed"):
            print("SUBSCRIBED", flush=True)
"""


def sessions_of(stack) -> float:
    return metric(
        httpx.get(f"{stack.http_url}/metrics", timeout=5).text,
        "carbon_realtime_process_connections",
    )


def released_within(stack, timeout: float) -> float:
    """Seconds until the web process holds no session and no row (else fail)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if sessions_of(stack) == 0 and sql("SELECT count(*) FROM active_connections") == [(0,)]:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"still held after {timeout} s")


def client_process(code: str, url: str, prefix: list[str] | None = None) -> subprocess.Popen:
    process = subprocess.Popen(
        [*(prefix or []), sys.executable, "-c", code, url],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    assert line.startswith("SUBSCRIBED"), line
    return process


def test_a_stopped_websocket_client_is_released_within_two_pings(transactional_db, tmp_path):
    env = stack_env(WEB_WS_PING_S=str(INTERVAL_S))
    stack = stack_start(("web",), env=env, logs=tmp_path)
    client = None
    try:
        client = client_process(WEBSOCKET_CLIENT, stack.ws_url)
        assert sessions_of(stack) == 1
        client.send_signal(signal.SIGSTOP)
        took = released_within(stack, 2 * INTERVAL_S + 3)
        print(f"stopped WebSocket client released after {took:.2f} s")
        assert took <= 2 * INTERVAL_S + 1  # two intervals, plus the check's own pace
    finally:
        if client is not None:
            client.kill()
            client.wait()
        stack.stop_all()


@pytest.fixture
def vanishing_peer():
    """A network namespace with a veth pair to it: (host side address, namespace name,
    how to take the peer's link down). Removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    tag = uuid.uuid4().hex[:6]
    namespace, host_if, peer_if = f"cb{tag}", f"cbh{tag}", f"cbp{tag}"
    octet = int(tag[:2], 16)
    host_ip, peer_ip = f"10.231.{octet}.1", f"10.231.{octet}.2"

    def run(*args):
        subprocess.run(args, check=True, capture_output=True)

    run("ip", "netns", "add", namespace)
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        run("ip", "link", "set", peer_if, "netns", namespace)
        run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        inside = ["ip", "netns", "exec", namespace]
        run(*inside, "ip", "addr", "add", f"{peer_ip}/30", "dev", peer_if)
        run(*inside, "ip", "link", "set", peer_if, "up")
        run(*inside, "ip", "link", "set", "lo", "up")

        def vanish() -> None:
            run(*inside, "ip", "link", "set", peer_if, "down")

        yield host_ip, inside, vanish
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


@pytest.mark.parametrize("transport", ["sse", "websocket"])
def test_a_vanished_peer_is_released_within_two_heartbeats(
    transactional_db, tmp_path, vanishing_peer, transport
):
    host_ip, inside, vanish = vanishing_peer
    env = stack_env(
        ALLOWED_HOSTS=f"{host_ip},127.0.0.1,localhost",
        REALTIME_SSE_HEARTBEAT_S=str(INTERVAL_S),
        REALTIME_UNACKED_TIMEOUT_S=str(INTERVAL_S),
        WEB_WS_PING_S=str(INTERVAL_S),
    )
    stack = stack_start(("web",), env=env, logs=tmp_path, host=host_ip)
    client = None
    try:
        if transport == "sse":
            url = f"{stack.http_url}/api/stream/dashboard?contexts=overview"
            client = client_process(SSE_CLIENT, url, prefix=inside)
        else:
            client = client_process(WEBSOCKET_CLIENT, stack.ws_url, prefix=inside)
        assert sessions_of(stack) == 1
        vanish()
        took = released_within(stack, 2 * INTERVAL_S + 5)
        print(f"vanished {transport} peer released after {took:.2f} s")
        assert took <= 2 * INTERVAL_S + 1
    finally:
        if client is not None:
            client.kill()
            client.wait()
        stack.stop_all()
