"""One fault, start to end: clients follow while a writer keeps committing, the fault
breaks something and brings it back, and what every client received is checked against
the change log; the recovery figures to report."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import statistics
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import psycopg

from tests.faults.database import (
    assert_exactly_once,
    context_heads,
    log_head,
    wait_for_no_connection_rows,
    wait_until_published,
)
from tests.faults.followers import Follower, Following, followed_contexts, followers

# -- writing ------------------------------------------------------------------------------


class Writer:
    """Commits updates through raw SQL on its own connection at about `rate` a second,
    in a thread, until stopped; reconnects when the database goes away. Raw SQL counts
    as much as ORM saves (the triggers capture both)."""

    def __init__(self, database_url: str, world: dict, rate: float = 50, seconds: float = 60):
        self.database_url = database_url
        self.world = world
        self.interval = 1 / rate
        self.deadline = time.monotonic() + seconds
        self.stop_event = threading.Event()
        self.committed = 0
        self.failed = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name="fault-writer", daemon=True)

    def start(self) -> Writer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the writer did not stop"

    def _statements(self):
        w = self.world
        # Acme (public, steel), Hidden Steel (not public: only staff may see it) and
        # Beta Soft (software): every followed context and the redaction in one mix.
        records = [(w["acme"], 2023), (w["acme"], 2024), (w["hidden"], 2024), (w["beta"], 2024)]
        n = 0
        while True:
            n += 1
            if n % 10 == 0:
                yield "UPDATE companies SET name = %s WHERE id = %s", [f"Acme Steel {n}", w["acme"]]
            else:
                company, year = random.choice(records)
                yield (
                    "UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1"
                    " WHERE company_id = %s AND year = %s",
                    [company, year],
                )

    def _run(self) -> None:
        statements = self._statements()
        conn = None
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.database_url, autocommit=True, connect_timeout=2)
                conn.execute(*next(statements))
                self.committed += 1
            except psycopg.Error as exc:
                self.failed += 1
                if len(self.errors) < 20:
                    self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
                self.stop_event.wait(0.1)
            self.stop_event.wait(self.interval)
        if conn is not None:
            conn.close()


def summary(values: list[float]) -> dict:
    """min / median / max, rounded to milliseconds."""
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


# -- one fault, start to end --------------------------------------------------------------


@dataclass
class FaultRun:
    """What happened around one fault: the clients, the writer, the fault's own times,
    the figures to report, and the active_connections rows the web server running at
    the end still held once every client had closed."""

    clients: list[Follower]
    writer: Writer
    # `t_fault` and `t_back` (monotonic) and what the fault itself returned.
    fault: dict
    figures: dict
    rows_left: int


async def run_through_fault(
    *,
    stack,
    world: dict,
    fault,
    contexts: list[str] | None = None,
    websockets: int = 4,
    sse: int = 1,
    steady_s: float = 2.0,
    after_s: float = 2.0,
    recovery_timeout: float = 30.0,
    rate: float = 50,
    seconds: float = 100,
) -> FaultRun:
    """Clients of `stack` (from the `fault_stack` fixture) follow `contexts` (by default
    `followed_contexts(world)`) while a writer commits to its database; `await
    fault(clients)` breaks something and brings it back (`t_fault` is when it was called,
    `t_back` when it returned), returning how to tell the first batch after recovery:
    `greeted_after` (on a new connection) or `min_seq`. Then writing goes on for
    `after_s`, stops, everything is published, every client catches up to the heads, and
    what each received is checked against the log. Last, the clients being closed, the
    rows left by the web server that runs now (after a restart, the new one)."""
    database_url = stack.database_url
    if contexts is None:
        contexts = followed_contexts(world)
    start = await asyncio.to_thread(log_head, database_url)
    clients = followers(stack, contexts, start, websockets=websockets, sse=sse, seconds=seconds)
    writer = Writer(database_url, world, rate=rate, seconds=seconds)
    async with Following(clients) as following:
        await following.all_greeted()
        writer.start()
        try:
            # The publisher may still be starting: live first, then `steady_s` of it.
            await following.all_received_after(time.monotonic())
            steady = time.monotonic()
            await asyncio.sleep(steady_s)
            await following.all_received_after(steady)
            fault_at = dt.datetime.now(dt.UTC)
            t_fault = time.monotonic()
            told = await fault(clients) or {}
            info = {**told, "t_fault": t_fault, "t_back": time.monotonic()}
            how = {"greeted_after": info.get("greeted_after", False)}
            how["min_seq"] = info.get("min_seq", 0)
            moment = info["t_fault"] if how["greeted_after"] else info["t_back"]
            await following.all_received_after(moment, timeout=recovery_timeout, **how)
            await asyncio.sleep(after_s)
        finally:
            await asyncio.to_thread(writer.stop)
        await asyncio.to_thread(wait_until_published, database_url)
        heads = await asyncio.to_thread(context_heads, database_url, contexts)
        await following.all_caught_up(heads)
    totals = await asyncio.to_thread(assert_exactly_once, database_url, clients)
    firsts = [c.first_batch_after(moment, **how) for c in clients]
    saw: dict[str, int] = defaultdict(int)
    for client in clients:
        for at, outcome in client.closes:
            if info["t_fault"] <= at <= max(firsts):
                saw[f"{type(client).__name__}: {outcome}"] += 1
    figures = {
        # Wall clock, to find the fault in the processes' logs.
        "fault_at": fault_at.isoformat(timespec="milliseconds"),
        "recovery_s": summary([t - info["t_fault"] for t in firsts]),
        "after_back_s": summary([t - info["t_back"] for t in firsts]),
        "down_s": round(info["t_back"] - info["t_fault"], 3),
        "clients": {"websocket": websockets, "sse": sse},
        "failed_reconnects": sum(c.failed_attempts for c in clients),
        "writes": {"committed": writer.committed, "failed": writer.failed},
        **totals,
        "client_saw": dict(saw),
    }
    web = stack.processes["web"].pid
    rows_left = await asyncio.to_thread(wait_for_no_connection_rows, database_url, web)
    return FaultRun(clients, writer, info, figures, rows_left)
