"""The cross-process contract (issue #15): three web processes behind HAProxy on one
Redis and one database behave as one server to clients, whichever process each lands
on, through kills, drains and reloads."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from contextlib import AsyncExitStack

import httpx
import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from adminpanel.maintenance import maintenance_switch
from config.haproxy import haproxy_reload
from notifications.announcements import announcement_broadcast
from preferences.policies import refresh_policies_update
from tests.cluster.conftest import CAP_PER_ADDRESS, PROCESSES
from tests.faults.database import assert_exactly_once, context_heads, log_head, wait_until_published
from tests.faults.fault_run import Writer
from tests.faults.followers import Following, SseFollower, WsFollower, followed_contexts

pytestmark = [pytest.mark.timeout(90), pytest.mark.asyncio]


# -- clients that know their session (so the process that holds it) --------------------


class SessionsMixin:
    """Records the `session` of every `hello`: active_connections says which process
    holds it."""

    def take(self, message: dict) -> None:
        if message.get("type") == "hello":
            self.__dict__.setdefault("sessions", []).append(message["session"])
        super().take(message)


class WsClient(SessionsMixin, WsFollower):
    pass


class SseClient(SessionsMixin, SseFollower):
    pass


def clients_of(cluster, contexts, start, *, websockets=0, sse=0, seconds=60) -> list:
    deadline = time.monotonic() + seconds
    made = []
    for n in range(websockets):
        client = WsClient(f"ws{n}", contexts, start, deadline)
        client.url = cluster.ws_url
        made.append(client)
    for n in range(sse):
        client = SseClient(f"sse{n}", contexts, start, deadline)
        client.url = f"{cluster.http_url}/api/stream/dashboard"
        made.append(client)
    return made


def servers_of(database_url: str, sessions: list[str]) -> dict[str, str]:
    """session -> the process (hostname:pid) holding it, from active_connections."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT id, server FROM active_connections WHERE id = ANY(%s)", [sessions]
        ).fetchall()
    return dict(rows)


async def server_now(cluster, client) -> str:
    """The process holding `client`'s current connection (its row is written just after
    the `hello`)."""
    deadline = time.monotonic() + 5
    while True:
        found = await asyncio.to_thread(servers_of, cluster.database_url, client.sessions[-1:])
        if found:
            return found[client.sessions[-1]]
        assert time.monotonic() < deadline, f"no row for {client.name}'s session"
        await asyncio.sleep(0.05)


def commit(database_url: str, statement: str, params: list) -> None:
    """One raw SQL change, as any client of the database would make it."""
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(statement, params)


async def restart_web(cluster, n: int) -> None:
    await asyncio.to_thread(cluster.start_web, n)
    await asyncio.to_thread(cluster.wait_state, f"web{n}", "UP")


# -- raw WebSockets placed on one process -------------------------------------------------


async def ws_on(cluster, n: int, stack: AsyncExitStack, contexts: list[str], since: int):
    """A WebSocket through HAProxy that lands on web process n (the others disabled in
    HAProxy for the moment), subscribed to `contexts` from `since`."""
    await asyncio.to_thread(cluster.only, n)
    try:
        ws = await stack.enter_async_context(connect(cluster.ws_url, open_timeout=5))
        hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
    finally:
        await asyncio.to_thread(cluster.only, *cluster.web)
    await ws.send(
        json.dumps(
            {"type": "subscribe", "contexts": contexts, "since": dict.fromkeys(contexts, since)}
        )
    )
    await until(ws, "subscribed")
    return ws, hello


async def until(ws, kind: str, timeout: float = 5, **fields) -> dict:
    """The next message of type `kind` (with `fields`), others skipped."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {kind} {fields} within {timeout} s"
        message = json.loads(await asyncio.wait_for(ws.recv(), remaining))
        if message["type"] == kind and all(message.get(k) == v for k, v in fields.items()):
            return message


# -- the contract ------------------------------------------------------------------------


async def test_clients_on_every_process_receive_the_same_seq(cluster, world):
    url = cluster.database_url
    contexts = followed_contexts(world)
    # From after the world's own inserts: the rename is then all there is to receive.
    await asyncio.to_thread(wait_until_published, url)
    start = await asyncio.to_thread(log_head, url)
    clients = clients_of(cluster, contexts, start, websockets=6, sse=3)
    async with Following(clients) as following:
        await following.all_greeted()
        servers = {await server_now(cluster, c) for c in clients}
        assert servers == {cluster.server(n) for n in cluster.web}, "not spread over all"
        await asyncio.to_thread(
            commit, url, "UPDATE companies SET name = 'Acme Spread' WHERE id = %s", [world["acme"]]
        )
        await asyncio.to_thread(wait_until_published, url)
        heads = await asyncio.to_thread(context_heads, url, contexts)
        await following.all_caught_up(heads)

    def renames(client) -> set[tuple[str, int]]:
        return {
            (context, item[0])
            for context in contexts
            for batch in client.batches[context]
            for item in batch.items
            if item[1] == "company"
        }

    # One change, one seq, on every context that shows it, for every client.
    first = renames(clients[0])
    assert first and len({seq for _, seq in first}) == 1, first
    for client in clients:
        assert renames(client) == first, f"{client.name}: {renames(client)} against {first}"
    await asyncio.to_thread(assert_exactly_once, url, clients)


async def test_websocket_of_a_killed_process_resumes_on_another(cluster, world):
    url = cluster.database_url
    contexts = followed_contexts(world)
    start = await asyncio.to_thread(log_head, url)
    clients = clients_of(cluster, contexts, start, websockets=4)
    writer = Writer(url, world, rate=40)
    async with Following(clients) as following:
        await following.all_greeted()
        writer.start()
        try:
            await following.all_received_after(time.monotonic())
            victim_server = await server_now(cluster, clients[0])
            victim = cluster.number_of(victim_server)
            on_victim = [c for c in clients if await server_now(cluster, c) == victim_server]
            t_kill = time.monotonic()
            await asyncio.to_thread(cluster.stop_web, victim, signal.SIGKILL)
            await following.all_received_after(t_kill, greeted_after=False)
            for client in on_victim:
                await following.until(
                    lambda c=client: any(t > t_kill for t in c.greeted), 15, "reconnected"
                )
            # HAProxy's health check takes the dead process out.
            out_s = await asyncio.to_thread(cluster.wait_state, f"web{victim}", "DOWN")
            await following.all_received_after(time.monotonic())
        finally:
            await asyncio.to_thread(writer.stop)
        await asyncio.to_thread(wait_until_published, url)
        heads = await asyncio.to_thread(context_heads, url, contexts)
        await following.all_caught_up(heads)
        for client in on_victim:
            now = await server_now(cluster, client)
            assert now != victim_server and now in {cluster.server(n) for n in cluster.web}
    totals = await asyncio.to_thread(assert_exactly_once, url, clients)
    print(f"\nkill -9: {len(on_victim)} moved, marked DOWN after {out_s:.2f} s, {totals}")
    # Started again (as a supervisor would), HAProxy's check takes it back in.
    await restart_web(cluster, victim)


async def test_sse_client_of_a_draining_process_resumes_on_another_with_last_event_id(
    cluster, world
):
    url = cluster.database_url
    contexts = followed_contexts(world)
    start = await asyncio.to_thread(log_head, url)
    clients = clients_of(cluster, contexts, start, sse=2)
    writer = Writer(url, world, rate=40)
    async with Following(clients) as following:
        await following.all_greeted()
        writer.start()
        try:
            await following.all_received_after(time.monotonic())
            client = clients[0]
            victim_server = await server_now(cluster, client)
            victim = cluster.number_of(victim_server)
            assert client.last_event_id, "no event id to resume from"
            t_stop = time.monotonic()
            # SIGTERM: the process drains (liveness 503, streams ended) and exits.
            await asyncio.to_thread(cluster.stop_web, victim, signal.SIGTERM)
            await following.until(lambda: any(t > t_stop for t in client.greeted), 15, "back")
            await following.all_received_after(time.monotonic())
        finally:
            await asyncio.to_thread(writer.stop)
        await asyncio.to_thread(wait_until_published, url)
        heads = await asyncio.to_thread(context_heads, url, contexts)
        await following.all_caught_up(heads)
        assert await server_now(cluster, client) != victim_server
    await asyncio.to_thread(cluster.wait_state, f"web{victim}", "DOWN")
    await asyncio.to_thread(assert_exactly_once, url, clients)


async def test_long_poll_is_woken_on_a_process_where_nobody_else_follows_its_context(
    cluster, world
):
    url = cluster.database_url
    context = f"company:{world['beta']}"
    await asyncio.to_thread(wait_until_published, url)
    cursor = await asyncio.to_thread(log_head, url)
    async with AsyncExitStack() as stack:
        # The context's other followers: on processes 2 and 3 only.
        others = [(await ws_on(cluster, n, stack, [context], cursor))[0] for n in (2, 3)]
        await asyncio.to_thread(cluster.only, 1)
        try:
            async with httpx.AsyncClient(base_url=cluster.http_url, timeout=30) as http:
                live = (await http.get("/api/realtime/live")).json()
                assert live["process"] == cluster.server(1)
                poll = asyncio.create_task(
                    http.get(
                        f"/api/updates/latest/{cursor}", params={"contexts": context, "wait": "20"}
                    )
                )
                await asyncio.sleep(0.5)
                await asyncio.to_thread(cluster.only, *cluster.web)
                assert not poll.done()
                started = time.monotonic()
                await asyncio.to_thread(
                    commit,
                    url,
                    "UPDATE emission_records SET scope1_tonnes = 51"
                    " WHERE company_id = %s AND year = 2024",
                    [world["beta"]],
                )
                response = await asyncio.wait_for(poll, 10)
                woken_s = time.monotonic() - started
        finally:
            await asyncio.to_thread(cluster.only, *cluster.web)
        body = response.json()
        assert response.status_code == 200, body
        seqs = [item["seq"] for item in body["changes"]]
        assert len(seqs) == 1, body  # the one update, nothing else since the cursor
        for ws in others:
            batch = await until(ws, "batch", context=context)
            assert [item["seq"] for item in batch["changes"]] == seqs
    assert woken_s < 3, f"woken after {woken_s:.2f} s"


async def test_maintenance_broadcast_and_policy_reach_every_process(cluster, world):
    staff = await sync_to_async(get_user_model().objects.create_user)(
        "cluster-ops", password="x-pass-1", is_staff=True
    )
    cursor = await asyncio.to_thread(log_head, cluster.database_url)
    async with AsyncExitStack() as stack:
        clients = [
            (await ws_on(cluster, n, stack, ["industry:steel"], cursor))[0] for n in cluster.web
        ]
        try:
            await sync_to_async(maintenance_switch)(actor=staff, active=True, message="Cluster")
            for ws in clients:
                await until(ws, "maintenance", active=True)
        finally:
            await sync_to_async(maintenance_switch)(actor=staff, active=False)
        for ws in clients:
            await until(ws, "maintenance", active=False)

        await sync_to_async(announcement_broadcast)(
            actor=staff,
            level="info",
            title="To all",
            body="Every process",
            context=None,
            requires_ack=False,
        )
        for ws in clients:
            assert (await until(ws, "notification"))["title"] == "To all"

        policy = {"user_type": "anonymous", "category": "industry_benchmarks", "debounce_ms": 30}
        await sync_to_async(refresh_policies_update)(actor=staff, document={"policies": [policy]})
        for ws in clients:
            message = await until(ws, "policy")
            assert message["policy"]["categories"]["industry_benchmarks"]["debounce_ms"] == 30


async def test_health_and_monitor_report_each_process_and_the_total(cluster, world):
    staff = await sync_to_async(get_user_model().objects.create_user)(
        "cluster-monitor", password="x-pass-1", is_staff=True
    )
    key = (await sync_to_async(Token.objects.create)(user=staff)).key
    cursor = await asyncio.to_thread(log_head, cluster.database_url)
    async with AsyncExitStack() as stack:
        for n in cluster.web:
            for _ in range(n):  # 1, 2 and 3 connections
                await ws_on(cluster, n, stack, ["overview"], cursor)
        async with httpx.AsyncClient(base_url=cluster.http_url, timeout=10) as http:
            health = (await http.get("/api/realtime/health")).json()
            mine = {
                p["server"]: p
                for p in health["processes"]
                if p["server"] in map(cluster.server, cluster.web)
            }
            assert {s: p["websocket"] for s, p in mine.items()} == {
                cluster.server(n): n for n in cluster.web
            }
            assert health["connections"]["total"] == sum(p["total"] for p in health["processes"])
            # The monitor's processes table: every running process reports to Redis
            # each MONITOR_INTERVAL_S.
            deadline = time.monotonic() + 10
            while True:
                snapshot = (
                    await http.get("/api/admin/monitor", headers={"Authorization": f"Token {key}"})
                ).json()
                listed = {p["server"]: p["connections"] for p in snapshot["processes"]}
                want = {cluster.server(n): n for n in cluster.web}
                if all(listed.get(s) == c for s, c in want.items()) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert {s: listed.get(s) for s in want} == want
            assert snapshot["connections"]["total"] >= sum(want.values())


async def test_per_address_cap_holds_across_processes(cluster, world):
    async def attempt(source: str):
        """A WebSocket from `source` through HAProxy; its first message (None: closed
        before any)."""
        ws = await connect(cluster.ws_url, open_timeout=5, local_addr=(source, 0))
        try:
            return ws, json.loads(await asyncio.wait_for(ws.recv(), 5))
        except ConnectionClosed:
            return ws, None

    async with AsyncExitStack() as stack:
        held = []
        for _ in range(CAP_PER_ADDRESS):
            ws, hello = await attempt("127.0.0.2")
            stack.push_async_callback(ws.close)
            assert hello["type"] == "hello"
            held.append(hello["session"])
        servers = await asyncio.to_thread(servers_of, cluster.database_url, held)
        assert len(set(servers.values())) == PROCESSES, "the capped address was not spread"
        # Over the cap: refused, whichever process HAProxy picks each time.
        for _ in range(PROCESSES):
            ws, message = await attempt("127.0.0.2")
            async with ws:
                assert message is None or message["type"] != "hello", message
                await ws.wait_closed()
                assert ws.close_code == 4429, (ws.close_code, message)
        # Another address is counted on its own.
        ws, hello = await attempt("127.0.0.3")
        stack.push_async_callback(ws.close)
        assert hello["type"] == "hello"


async def test_reload_drains_the_old_worker_and_clients_resume(cluster, world):
    url = cluster.database_url
    contexts = followed_contexts(world)
    start = await asyncio.to_thread(log_head, url)
    clients = clients_of(cluster, contexts, start, websockets=2, sse=1)
    writer = Writer(url, world, rate=40)
    async with Following(clients) as following:
        await following.all_greeted()
        writer.start()
        try:
            await following.all_received_after(time.monotonic())
            t_reload = time.monotonic()
            await asyncio.to_thread(haproxy_reload, cluster.layout.run_dir)
            # New clients are served at once by the new worker, none refused.
            async with httpx.AsyncClient(base_url=cluster.http_url, timeout=5) as http:
                for _ in range(20):
                    assert (await http.get("/api/realtime/live")).status_code == 200
                    await asyncio.sleep(0.05)
            # The old worker ends its connections at hard-stop-after (3 s); they resume.
            for client in clients:
                await following.until(
                    lambda c=client: any(t > t_reload for t in c.greeted), 15, "back"
                )
            back_s = max(min(t for t in c.greeted if t > t_reload) for c in clients) - t_reload
            await following.all_received_after(time.monotonic())
        finally:
            await asyncio.to_thread(writer.stop)
        await asyncio.to_thread(wait_until_published, url)
        heads = await asyncio.to_thread(context_heads, url, contexts)
        await following.all_caught_up(heads)
    await asyncio.to_thread(assert_exactly_once, url, clients)
    assert 2.5 < back_s < 10, f"clients came back {back_s:.2f} s after the reload"
    assert cluster.haproxy.poll() is None, "the HAProxy master exited on reload"
