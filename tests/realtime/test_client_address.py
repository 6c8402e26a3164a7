"""Per-address limits key on the client address as a trusted proxy reports it.

The real web server, started as the Procfile does, trusts X-Forwarded-For from PROXY
(FORWARDED_ALLOW_IPS) only. Clients bind their source address to loopback addresses of
their own: PROXY stands for a reverse proxy in front of many clients, UNTRUSTED for a
client that forges the header. Neither is 127.0.0.1, which the default
FORWARDED_ALLOW_IPS trusts: a server that ignored the setting would fail these tests.
"""

import asyncio
import contextlib
import json
import os
import uuid

import httpx
import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime.client_address import UNKNOWN_ADDRESS, address_normalize
from tests.helpers import sql
from tests.live.conftest import stack_env, stack_start

pytestmark = pytest.mark.timeout(120)

PROXY = "127.0.0.5"
UNTRUSTED = "127.0.0.6"
# Documentation addresses (RFC 5737) the proxy reports for the clients behind it.
ALICE, BOB, CAROL = "203.0.113.1", "203.0.113.2", "203.0.113.3"
# What a trusted proxy may pass on that is not an address.
MALFORMED = [
    "not-an-address",
    f"{ALICE}, garbage",  # the nearest untrusted hop is the one believed: `garbage`
    "[2001:db8::1",
    "999.1.1.1",
    "203.0.113.7:not-a-port",
    "x" * 4000,
]


@contextlib.contextmanager
def serve(tmp_path, **limits):
    """The web server with FORWARDED_ALLOW_IPS=PROXY, a cap of two live connections per
    address, and `limits`; a Redis prefix of its own, so no window of an earlier run (or
    another test run sharing the Redis) counts."""
    prefix = f"{os.environ.get('REDIS_PREFIX', 'carbon')}-addr-{uuid.uuid4().hex[:8]}"
    env = stack_env(
        FORWARDED_ALLOW_IPS=PROXY,
        REALTIME_MAX_CONNECTIONS_PER_ADDRESS="2",
        REDIS_PREFIX=prefix,
        **limits,
    )
    stack = stack_start(("web",), env=env, logs=tmp_path)
    try:
        yield stack
    finally:
        stack.stop_all()
    assert "Traceback" not in stack.log("web"), stack.log("web")[-3000:]


def forwarded(address: str | None) -> dict:
    return {"X-Forwarded-For": address} if address is not None else {}


def http_from(source: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    return httpx.AsyncClient(transport=transport, timeout=15)


async def connection_addresses() -> dict[str, int]:
    """Live connections by the address they are counted under."""
    rows = await database_sync_to_async(sql)(
        "SELECT host(client_address), count(*) FROM active_connections GROUP BY 1"
    )
    return dict(rows)


# -- the address, written one way ----------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("203.0.113.1", "203.0.113.1"),
        ("::ffff:203.0.113.1", "203.0.113.1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("unknown", UNKNOWN_ADDRESS),
        ("", UNKNOWN_ADDRESS),
        (None, None),
    ],
)
def test_an_address_is_written_one_way(host, address):
    assert address_normalize(host) == address


# -- WebSocket connections per address -----------------------------------------------------


class Sockets:
    """WebSocket connections opened by a test, closed at its end."""

    def __init__(self, url: str):
        self.url = url
        self.opened = []

    async def attempt(self, source: str, address: str | None = None) -> str | int:
        """Connect from `source` with that X-Forwarded-For: "hello", or the close code."""
        ws = await connect(
            self.url,
            additional_headers=forwarded(address),
            local_addr=(source, 0),
            open_timeout=10,
        )
        self.opened.append(ws)
        try:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        except ConnectionClosed as exc:
            return exc.rcvd.code
        return message["type"]

    async def close(self) -> None:
        for ws in self.opened:
            await ws.close()


async def test_websocket_connections_are_capped_per_forwarded_address(transactional_db, tmp_path):
    with serve(tmp_path) as stack:
        sockets = Sockets(stack.ws_url)
        try:
            # Two clients behind the proxy: each has its own allowance of two.
            assert [await sockets.attempt(PROXY, ALICE) for _ in range(3)] == [
                "hello",
                "hello",
                4429,
            ]
            assert [await sockets.attempt(PROXY, BOB) for _ in range(2)] == ["hello", "hello"]
            # Another spelling of Alice's address is Alice.
            assert await sockets.attempt(PROXY, f"::ffff:{ALICE}") == 4429
            # An untrusted peer's header is ignored: it is counted under its own address,
            # whatever it claims to be, ...
            forged = [await sockets.attempt(UNTRUSTED, address) for address in (CAROL, CAROL)]
            assert forged == ["hello", "hello"]
            assert await sockets.attempt(UNTRUSTED, "198.51.100.9") == 4429
            assert await sockets.attempt(UNTRUSTED) == 4429
            # ... and the address it named keeps its whole allowance.
            assert [await sockets.attempt(PROXY, CAROL) for _ in range(2)] == ["hello", "hello"]
            assert await connection_addresses() == {ALICE: 2, BOB: 2, UNTRUSTED: 2, CAROL: 2}
        finally:
            await sockets.close()


# -- SSE streams per address ---------------------------------------------------------------


class Streams:
    """SSE streams opened by a test, left open until `exits` closes them."""

    def __init__(self, exits: contextlib.AsyncExitStack, url: str):
        self.exits = exits
        self.url = f"{url}/api/stream/dashboard?contexts=overview"
        # Each stream's line iterator stays referenced: a dropped one is finalized, and
        # closes its connection.
        self.readers = []

    async def attempt(self, client: httpx.AsyncClient, address: str | None) -> str | int:
        """Open a stream with that X-Forwarded-For: "hello", or the refusal's status."""
        response = await self.exits.enter_async_context(
            client.stream("GET", self.url, headers=forwarded(address))
        )
        if response.status_code != 200:
            body = json.loads(await response.aread())
            assert body["error"]["code"] == "rate_limited"
            assert int(response.headers["retry-after"]) > 0
            return response.status_code
        lines = response.aiter_lines()
        self.readers.append(lines)

        async def first_event() -> str:
            async for line in lines:
                if line.startswith("event: "):
                    return line.removeprefix("event: ")
            return "ended"

        return await asyncio.wait_for(first_event(), 10)


async def test_sse_streams_are_capped_per_forwarded_address(transactional_db, tmp_path):
    with serve(tmp_path) as stack:
        async with (
            contextlib.AsyncExitStack() as exits,
            http_from(PROXY) as proxy,
            http_from(UNTRUSTED) as untrusted,
        ):
            streams = Streams(exits, stack.http_url)

            async def attempts(client, address, times):
                return [await streams.attempt(client, address) for _ in range(times)]

            assert await attempts(proxy, ALICE, 3) == ["hello", "hello", 429]
            assert await attempts(proxy, BOB, 2) == ["hello", "hello"]
            assert await attempts(untrusted, CAROL, 3) == ["hello", "hello", 429]
            assert await streams.attempt(untrusted, "198.51.100.9") == 429
            assert await attempts(proxy, CAROL, 2) == ["hello", "hello"]
            assert await connection_addresses() == {ALICE: 2, BOB: 2, UNTRUSTED: 2, CAROL: 2}


# -- the poll rate per address -------------------------------------------------------------


async def poll_status(client: httpx.AsyncClient, url: str, address: str | None) -> int:
    response = await client.get(
        f"{url}/api/updates/latest/0", params={"contexts": "overview"}, headers=forwarded(address)
    )
    if response.status_code == 429:
        assert response.json()["error"]["code"] == "throttled"
        assert 1 <= int(response.headers["retry-after"]) <= 60
    return response.status_code


async def test_polls_are_limited_per_forwarded_address(transactional_db, tmp_path):
    with serve(tmp_path, REALTIME_POLL_RATE="3/minute") as stack:
        url = stack.http_url
        async with http_from(PROXY) as proxy, http_from(UNTRUSTED) as untrusted:
            assert [await poll_status(proxy, url, ALICE) for _ in range(4)] == [200] * 3 + [429]
            assert [await poll_status(proxy, url, BOB) for _ in range(4)] == [200] * 3 + [429]
            # Each forged poll names another address: all count against 127.0.0.6.
            forged = [f"198.51.100.{n}" for n in range(1, 5)]
            statuses = [await poll_status(untrusted, url, address) for address in forged]
            assert statuses == [200] * 3 + [429]
            assert await poll_status(untrusted, url, CAROL) == 429
            assert [await poll_status(proxy, url, CAROL) for _ in range(3)] == [200] * 3


# -- the REST throttles and the engagement rate -----------------------------------------


async def test_rest_throttles_and_engagement_rate_key_on_the_forwarded_address(
    transactional_db, tmp_path
):
    # DRF's anonymous throttle read X-Forwarded-For itself, from anybody (NUM_PROXIES).
    with serve(tmp_path, API_THROTTLE_ANON="3/minute", ENGAGEMENT_RATE="2/minute") as stack:
        industries = f"{stack.http_url}/api/industries/"
        async with http_from(PROXY) as proxy, http_from(UNTRUSTED) as untrusted:

            async def get(client, address):
                return (await client.get(industries, headers=forwarded(address))).status_code

            assert [await get(proxy, ALICE) for _ in range(4)] == [200] * 3 + [429]
            assert [await get(proxy, BOB) for _ in range(3)] == [200] * 3
            forged = [await get(untrusted, f"198.51.100.{n}") for n in range(1, 5)]
            assert forged == [200] * 3 + [429]
            assert [await get(proxy, CAROL) for _ in range(3)] == [200] * 3

            # Engagement reports: one allowance per client address (anonymous, no session).
            events = f"{stack.http_url}/api/engagement/events"

            async def report(client, address):
                response = await client.post(
                    events, json={"events": [{"kind": "pause"}]}, headers=forwarded(address)
                )
                return response.status_code

            dave, erin = "203.0.113.4", "203.0.113.5"
            assert [await report(proxy, dave) for _ in range(3)] == [202, 202, 429]
            assert [await report(proxy, erin) for _ in range(2)] == [202, 202]
            rows = await database_sync_to_async(sql)(
                "SELECT client, count(*) FROM engagement_events GROUP BY 1 ORDER BY 1"
            )
            assert rows == [(f"addr:{dave}", 2), (f"addr:{erin}", 2)]


# -- malformed X-Forwarded-For from the trusted proxy ---------------------------------------


async def test_a_malformed_forwarded_address_is_one_shared_unknown_client(
    transactional_db, tmp_path
):
    """Nothing breaks (the connection table's address column is `inet`); such clients
    share one allowance rather than escape the limits."""
    with serve(tmp_path, REALTIME_POLL_RATE="100/minute") as stack:
        sockets = Sockets(stack.ws_url)
        try:
            answers = [await sockets.attempt(PROXY, value) for value in MALFORMED[:3]]
            assert answers == ["hello", "hello", 4429]
            assert await connection_addresses() == {UNKNOWN_ADDRESS: 2}
            # The untrusted peer's garbage is ignored like any other forged header.
            assert await sockets.attempt(UNTRUSTED, "not-an-address") == "hello"
            # An empty header names nobody: the proxy itself is the client.
            assert await sockets.attempt(PROXY, ", ,") == "hello"
            assert await connection_addresses() == {UNKNOWN_ADDRESS: 2, UNTRUSTED: 1, PROXY: 1}
        finally:
            await sockets.close()

        url = stack.http_url
        async with contextlib.AsyncExitStack() as exits, http_from(PROXY) as proxy:
            for value in MALFORMED:
                assert await poll_status(proxy, url, value) == 200, value
                response = await proxy.get(f"{url}/api/industries/", headers=forwarded(value))
                assert response.status_code == 200, value
            # The sockets above are closed by now (or closing): the shared allowance is free.
            for _ in range(50):
                if UNKNOWN_ADDRESS not in await connection_addresses():
                    break
                await asyncio.sleep(0.1)
            streams = Streams(exits, url)
            assert await streams.attempt(proxy, MALFORMED[3]) == "hello"
            assert await streams.attempt(proxy, MALFORMED[4]) == "hello"
            assert await streams.attempt(proxy, MALFORMED[5]) == 429
            assert await connection_addresses() == {UNKNOWN_ADDRESS: 2}
