"""The clients of one load generator process (bench/loadgen.py) as one group: opened,
churned, drained, reported on and closed together."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import time

import psycopg

from bench.loadgen_clients import Client, Recorder
from bench.loadgen_figures import latencies, loss, rates

# How often the event loop's lateness is sampled (a report's `loop_lag_ms`).
LAG_TICK_S = 0.005
HEADS_SQL = (
    "SELECT context, last_seq FROM context_heads WHERE audience = 'public' AND context = ANY(%s)"
)
# Each context's last public change at or below a seq: where a drain to that seq ends.
HEADS_AT_SQL = """
SELECT context, max(seq) FROM change_routes
 WHERE context = ANY(%s) AND seq <= %s AND (audiences & 1) <> 0
 GROUP BY context
"""


class LoadGen:
    """This process's clients, all following their plan; `reads` False for slow readers."""

    client_class: type[Client] = Client
    reads = True  # whether each client reads what it receives (False: slow readers)

    def __init__(self, args: argparse.Namespace, plan: list[list[str]]):
        self.args = args
        self.clients = [self.client_class(i, contexts) for i, contexts in enumerate(plan)]
        self.recorder = Recorder()
        self.connect_s = 0.0

    @property
    def live(self) -> list[Client]:
        return [c for c in self.clients if c.ws is not None]

    async def open_all(self) -> dict:
        started = time.monotonic()
        gate = asyncio.Semaphore(self.args.connect_concurrency)

        async def one(client: Client) -> bool:
            await client.arrive()
            async with gate:
                ok = await client.open(self.args.url, compression=self.args.compression)
            if ok and self.reads:
                client.task = asyncio.create_task(client.read(self.recorder))
            return ok

        results = await asyncio.gather(*(one(c) for c in self.clients))
        self.connect_s = time.monotonic() - started
        return {
            "clients": len(self.clients),
            "connected": sum(results),
            "failed": len(results) - sum(results),
            "rejected_contexts": sum(c.rejected for c in self.clients),
            "connect_s": round(self.connect_s, 2),
            "pid": os.getpid(),
        }

    def state(self) -> dict:
        """How many clients this process has, and how many are open."""
        return {
            "clients": len(self.clients),
            "open": sum(1 for c in self.clients if c.ws is not None and c.closed is None),
        }

    def contexts(self) -> list[str]:
        return sorted({ctx for c in self.live for ctx in c.streams})

    async def churn(self, share: float, seed: int) -> dict:
        """Abort `share` of the open clients at once, then reconnect them all, each
        resuming from its cursors."""
        started = time.monotonic()
        open_clients = [c for c in self.clients if c.ws is not None and c.closed is None]
        chosen = random.Random(seed).sample(open_clients, round(len(open_clients) * share))
        for client in chosen:
            await client.abort()
        gate = asyncio.Semaphore(self.args.connect_concurrency)

        async def again(client: Client) -> bool:
            async with gate:
                ok = await client.open(self.args.url, compression=self.args.compression)
            if ok:
                client.task = asyncio.create_task(client.read(self.recorder))
            return ok

        results = await asyncio.gather(*(again(c) for c in chosen))
        return {
            "aborted": len(chosen),
            "reconnected": sum(results),
            "failed": len(results) - sum(results),
            "s": round(time.monotonic() - started, 3),
            "pid": os.getpid(),
        }

    async def drain(self, timeout: float, seq: int | None = None) -> dict:
        """Wait until every open client's cursor reached its context's published head, or
        with `seq` its context's last change at or below seq."""
        started = time.monotonic()
        contexts = self.contexts()
        behind = 0
        async with await psycopg.AsyncConnection.connect(
            self.args.database_url, autocommit=True
        ) as conn:
            fixed = None
            if seq is not None:
                fixed = dict(await (await conn.execute(HEADS_AT_SQL, [contexts, seq])).fetchall())
            while True:
                if fixed is None:
                    heads = dict(await (await conn.execute(HEADS_SQL, [contexts])).fetchall())
                else:
                    heads = fixed
                behind = sum(
                    1
                    for c in self.live
                    if c.closed is None
                    for ctx, stream in c.streams.items()
                    if stream.cursor < heads.get(ctx, 0)
                )
                if behind == 0 or time.monotonic() - started > timeout:
                    break
                await asyncio.sleep(0.05)
        return {"s": round(time.monotonic() - started, 3), "behind": behind}

    async def report(self, window: dict) -> dict:
        """Figures for one window; forgets what it covered."""
        from_ns, to_ns = window.get("from_ns", 0), window.get("to_ns", 2**62)
        seq_lo, seq_hi = window["seq_lo"], window["seq_hi"]
        out: dict = {"label": window.get("label"), "pid": os.getpid()}
        out.update(latencies(self.recorder, from_ns, to_ns, window.get("per_change", False)))
        out.update(rates(self.recorder, from_ns, to_ns))
        out.update(await loss(self.args.database_url, self.live, seq_lo, seq_hi))
        clients = self.clients
        out.update(
            {
                "clients": len(clients),
                "open": sum(1 for c in clients if c.ws is not None and c.closed is None),
                "closed_by_server": sum(1 for c in clients if c.closed is not None),
                "duplicates": sum(c.duplicates for c in clients),
                "gaps": sum(c.gaps for c in clients),
                "resets": sum(c.resets for c in clients),
                "errors": sum(c.errors for c in clients),
            }
        )
        for c in clients:
            c.duplicates = c.gaps = c.resets = c.errors = 0
            for stream in c.streams.values():
                stream.prune(seq_hi)
        return out

    async def watch_loop(self) -> None:
        """Sample the event loop's lateness (time past each 5 ms tick)."""
        rec = self.recorder
        while True:
            due = time.monotonic_ns() + int(LAG_TICK_S * 1e9)
            await asyncio.sleep(LAG_TICK_S)
            rec.loop_lag_us.append(max(0, time.monotonic_ns() - due) // 1000)
            rec.loop_lag_at.append(time.time_ns())

    async def close_all(self) -> None:
        for client in self.clients:
            if client.task is not None:
                client.task.cancel()
        sockets = [c.ws for c in self.clients if c.ws is not None]
        if sockets and self.reads:  # slow readers would not read the server's close
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True), 15
                )
        for ws in sockets:
            with contextlib.suppress(Exception):
                ws.transport.abort()
