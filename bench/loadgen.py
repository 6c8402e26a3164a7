"""Load generator: K WebSocket clients in one process, each following its contexts.

Run by the scenarios (bench/latency.py, bench/fanout.py), several in parallel so one
event loop is not the bottleneck:

    python -m bench.loadgen --url ws://127.0.0.1:8000/ws/dashboard/updates \\
        --plan clients.json --database-url postgres://... --control

`--plan` is a JSON file holding a list with one entry per client: the list of contexts
it subscribes to (`--contexts '["overview"]' --clients 100` is the short form).

Every received batch item is recorded: its seq (per client and context, for the loss
check) and, when the writer stamped it, its latency. The bench writers put their commit
time into the data (`emission_records.source = 'bench:<time_ns>[:up|:down]'`), so the
latency of an item is its receive time (`time.time_ns()` right after the frame arrived)
minus that stamp, on the same machine's clock.

Two ways to run:

- `--control`: print `READY {...}` once every client subscribed, then obey one command
  per line on stdin, each answered by one line on stdout:
  `drain <timeout_s>` (wait until every client's cursor reached its context's published
  head; `drain <timeout_s> <seq>`: each context's last change at or below seq, so the
  writer may go on) -> `DRAINED {...}`; `report {"label", "from_ns", "to_ns", "seq_lo",
  "seq_hi", "per_change"}` -> `REPORT {...}` (and forget what it covered);
  `churn {"share", "seed"}` (abort that share of the open clients without a close frame,
  then reconnect them, each resuming every context from its cursor) -> `CHURNED {...}`;
  `stop` or end of input -> close every connection, `DONE {...}`, exit.
- `--duration S`: run S seconds after READY, drain, then write one report covering the
  whole run to `--out` (or stdout) and exit.

Either way `--timeout` bounds the whole process.

`--slow` makes every client of the process one that stops reading once subscribed (the
slow readers of bench/slow_readers.py): its socket has the smallest receive buffer the
kernel allows and the client library stops reading it as soon as one frame waits
(`max_queue=1`), so what the server sends piles up on the server's side. Once a second
each checks whether the server cut it off (its socket is no longer established; a ping
draws the reset from a server that no longer has the connection) and, with
`--slow-return`, comes back like the browser client after a jittered delay (resuming
from its cursors; `--slow-fresh`: subscribing anew, owed nothing) and stops reading
again; `--slow-stagger S`: each first connects at a random moment within S seconds.
`state` -> `STATE {"clients", "open", "cut", "clients_cut", "returned", "cut_after_s"}`
(how long each client cut off had been subscribed when it found out); `drain` and
`report` are for clients that read.

A report says, for the window: a latency histogram (100 us buckets) of the stamped items
whose commit time lies in [from_ns, to_ns], frames and items received per 100 ms, and
the loss check: the change log's `change_routes` of each client's contexts with seq in
(seq_lo, seq_hi] (public audience) against the items the client received. A routed seq
the client did not get counts as coalesced when the frame that covered it carried a
later change of the same record (PROTOCOL.md merges those), else as lost. Duplicates are
items at or below what the client already had; gaps are batches whose `prev_seq` is above
the client's cursor (the server should have filled them itself).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import resource
import socket
import struct
import sys
import time
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import psycopg
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

BUCKET_US = 100
RATE_BUCKET_NS = 100_000_000  # frames and items are counted per 100 ms
STAMP = "bench:"
KINDS = ("company", "industry", "overview", "other")
LAG_TICK_S = 0.005
# A slow reader's receive buffer: the kernel raises it to its minimum (a few KB), so the
# server's bytes stop flowing almost at once when the client does not read.
SLOW_RCVBUF = 4096
# How often a slow reader checks whether it was cut off, and the range of its delay
# before coming back (the browser client's first backoff is a draw up to 0.5 s, after
# the server's 1 s close grace).
SLOW_CHECK_S = 1.0
SLOW_RETURN_S = (0.5, 1.5)
TCP_ESTABLISHED = 1  # tcpi_state of struct tcp_info (linux/tcp_states.h)


def kind_of(context: str) -> int:
    name = context.partition(":")[0]
    return KINDS.index(name) if name in KINDS else len(KINDS) - 1


ROUTES_SQL = """
SELECT r.context, r.seq, d.entity, d.record_id
  FROM change_routes r JOIN data_changes d ON d.seq = r.seq
 WHERE r.context = ANY(%s) AND r.seq > %s AND r.seq <= %s AND (r.audiences & 1) <> 0
 ORDER BY r.context, r.seq
"""
HEADS_SQL = (
    "SELECT context, last_seq FROM context_heads WHERE audience = 'public' AND context = ANY(%s)"
)
# Each context's last public change at or below a seq: where a drain to that seq ends.
HEADS_AT_SQL = """
SELECT context, max(seq) FROM change_routes
 WHERE context = ANY(%s) AND seq <= %s AND (audiences & 1) <> 0
 GROUP BY context
"""
# SO_LINGER on, 0 s: close() sends a TCP reset at once, no close frame and no FIN, as a
# client that vanishes (a dropped network, a killed tab) looks to the server at best.
LINGER_RESET = struct.pack("ii", 1, 0)


def nofile_raise() -> int:
    """Raise the soft limit on open files to the hard one; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def stamp_of(source: str) -> int | None:
    """The writer's commit time in a `source` value `bench:<time_ns>[:...]`."""
    if not source.startswith(STAMP):
        return None
    digits = source[len(STAMP) :].split(":", 1)[0]
    return int(digits) if digits.isdigit() else None


class Stream:
    """One client's view of one context."""

    __slots__ = ("cursor", "floor", "frame_hi", "frame_lo", "seqs", "start")

    def __init__(self, start: int):
        self.start = start  # `subscribed.seq`: delivery starts after it
        self.cursor = start  # seq_to of the last batch
        self.floor = start  # items at or below this were had (or pruned) already
        self.seqs = array("q")  # received item seqs, ascending
        self.frame_lo = array("q")  # each batch covers (lo, hi]
        self.frame_hi = array("q")

    def prune(self, through: int) -> None:
        cut = bisect_right(self.seqs, through)
        del self.seqs[:cut]
        cut = bisect_right(self.frame_hi, through)
        del self.frame_lo[:cut]
        del self.frame_hi[:cut]
        self.floor = max(self.floor, through)


class Recorder:
    """What every client of this process measured, shared."""

    def __init__(self) -> None:
        self.stamp_ns = array("q")  # commit time of each stamped item received
        self.latency_us = array("q")
        self.kind = array("b")  # KINDS index of the item's context
        self.loop_lag_us = array("q")  # event-loop lateness, sampled every LAG_TICK_S
        self.loop_lag_at = array("q")
        self.frames: Counter[int] = Counter()  # per 100 ms of receive time
        self.items: Counter[int] = Counter()


class Client:
    __slots__ = (
        "closed",
        "contexts",
        "duplicates",
        "errors",
        "gaps",
        "index",
        "rejected",
        "resets",
        "streams",
        "task",
        "ws",
    )

    def __init__(self, index: int, contexts: list[str]):
        self.index = index
        self.contexts = contexts
        self.ws = None
        self.streams: dict[str, Stream] = {}
        self.task: asyncio.Task | None = None
        self.duplicates = self.gaps = self.resets = self.errors = self.rejected = 0
        self.closed: int | None = None  # close code, once closed by the server

    async def connect_options(self, url: str) -> dict:
        """Options of `connect` beyond the common ones (SlowClient's socket)."""
        return {}

    async def open(self, url: str, *, compression: str | None, attempts: int = 3) -> bool:
        """Connect and subscribe; a client that had streams resumes each from its cursor
        (`since`), keeping what it received for the loss check."""
        for attempt in range(attempts):
            try:
                extra = await self.connect_options(url)
                self.ws = await connect(
                    url,
                    max_size=None,
                    compression=compression,
                    open_timeout=60,
                    ping_interval=None,
                    close_timeout=2,
                    user_agent_header="carbon-bench-loadgen",
                    **extra,
                )
                hello = orjson.loads(await asyncio.wait_for(self.ws.recv(decode=False), 60))
                if hello.get("type") != "hello":
                    raise RuntimeError(f"expected hello, got {hello.get('type')}")
                subscribe: dict = {"type": "subscribe", "contexts": self.contexts, "ref": 1}
                if self.streams:
                    subscribe["contexts"] = list(self.streams)
                    subscribe["since"] = {ctx: s.cursor for ctx, s in self.streams.items()}
                await self.ws.send(json.dumps(subscribe))
                while True:
                    reply = orjson.loads(await asyncio.wait_for(self.ws.recv(decode=False), 60))
                    if reply.get("type") == "subscribed" and reply.get("ref") == 1:
                        break
                self.rejected = len(reply.get("rejected") or [])
                if not self.streams:
                    self.streams = {ctx: Stream(reply["seq"]) for ctx in reply["contexts"]}
                self.closed = None
                return True
            except Exception:
                if self.ws is not None:
                    self.ws.transport.abort()
                    self.ws = None
                await asyncio.sleep(0.5 * (attempt + 1))
        return False

    async def arrive(self) -> None:
        """Wait until this client's first connection is due (at once)."""

    async def abort(self) -> None:
        """Stop reading and drop the connection with a TCP reset, no close frame."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        ws, self.ws = self.ws, None
        if ws is not None:
            sock = ws.transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            ws.transport.abort()

    async def read(self, recorder: Recorder) -> None:
        ws, streams = self.ws, self.streams
        stamp_ns, latency_us, kinds = recorder.stamp_ns, recorder.latency_us, recorder.kind
        kind_by_context = {ctx: kind_of(ctx) for ctx in streams}
        frames, items_count = recorder.frames, recorder.items
        try:
            while True:
                data = await ws.recv(decode=False)
                now = time.time_ns()
                message = orjson.loads(data)
                kind = message.get("type")
                if kind != "batch":
                    if kind == "reset":
                        self.resets += 1
                        stream = streams.get(message.get("context"))
                        if stream is not None:
                            stream.cursor = max(stream.cursor, message["seq"])
                    elif kind == "error":
                        self.errors += 1
                    continue
                stream = streams.get(message["context"])
                if stream is None:
                    self.errors += 1
                    continue
                prev_seq, seq_to, cursor = message["prev_seq"], message["seq_to"], stream.cursor
                if prev_seq > cursor:
                    self.gaps += 1
                stream.frame_lo.append(prev_seq if prev_seq > cursor else cursor)
                stream.frame_hi.append(seq_to)
                seqs = stream.seqs
                last = seqs[-1] if seqs else stream.floor
                taken = 0
                for item in message["changes"]:
                    seq = item["seq"]
                    if seq <= last:
                        self.duplicates += 1
                        continue
                    seqs.append(seq)
                    last = seq
                    taken += 1
                    if item["entity"] == "emission_record":
                        source = item["fields"].get("source")
                        if source and source.startswith(STAMP):
                            stamp = stamp_of(source)
                            if stamp is not None:
                                stamp_ns.append(stamp)
                                latency_us.append((now - stamp) // 1000)
                                kinds.append(kind_by_context[message["context"]])
                if seq_to > cursor:
                    stream.cursor = seq_to
                bucket = now // RATE_BUCKET_NS
                frames[bucket] += 1
                items_count[bucket] += taken
        except ConnectionClosed as exc:
            self.closed = exc.rcvd.code if exc.rcvd else 1006
        except asyncio.CancelledError:
            raise
        except Exception:
            self.errors += 1
            self.closed = -1


class SlowClient(Client):
    """A client that stops reading once subscribed (`--slow`)."""

    __slots__ = ("arrive_after_s", "subscribed_at")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.arrive_after_s = 0.0  # the first connection only (`--slow-stagger`)

    async def arrive(self) -> None:
        await asyncio.sleep(self.arrive_after_s)

    async def open(self, url: str, *, compression: str | None, attempts: int = 3) -> bool:
        ok = await super().open(url, compression=compression, attempts=attempts)
        self.subscribed_at = time.monotonic()
        return ok

    async def connect_options(self, url: str) -> dict:
        # max_queue=1: the library stops reading the socket as soon as one frame waits.
        return {"sock": await _small_receive_socket(url), "max_queue": 1}

    def established(self) -> bool:
        """Whether the kernel still holds the connection as established (a client that
        does not read learns of the server's reset only this way)."""
        sock = self.ws.transport.get_extra_info("socket") if self.ws is not None else None
        if sock is None:
            return False
        try:
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == TCP_ESTABLISHED
        except OSError:
            return False


class LoadGen:
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
        out.update(self._latencies(from_ns, to_ns, window.get("per_change", False)))
        out.update(self._rates(from_ns, to_ns))
        out.update(await self._loss(seq_lo, seq_hi))
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

    def _latencies(self, from_ns: int, to_ns: int, per_change: bool) -> dict:
        rec = self.recorder
        hist: Counter[int] = Counter()
        by_kind: dict[str, Counter[int]] = {}
        by_change: dict[int, list[int]] = {}
        keep_ts, keep_us, keep_kind = array("q"), array("q"), array("b")
        count, max_us, sum_us = 0, 0, 0
        for stamp, us, kind in zip(rec.stamp_ns, rec.latency_us, rec.kind, strict=True):
            if stamp < from_ns:
                continue
            if stamp > to_ns:
                keep_ts.append(stamp)
                keep_us.append(us)
                keep_kind.append(kind)
                continue
            us = max(us, 0)
            count += 1
            sum_us += us
            max_us = max(max_us, us)
            hist[us // BUCKET_US] += 1
            name = KINDS[kind]
            if name not in by_kind:
                by_kind[name] = Counter()
            by_kind[name][us // BUCKET_US] += 1
            if per_change:
                by_change.setdefault(stamp, []).append(us)
        # In place: every client's reader holds these very arrays.
        rec.stamp_ns[:] = keep_ts
        rec.latency_us[:] = keep_us
        rec.kind[:] = keep_kind
        lags = sorted(
            lag
            for at, lag in zip(rec.loop_lag_at, rec.loop_lag_us, strict=True)
            if from_ns <= at <= to_ns
        )
        del rec.loop_lag_at[:], rec.loop_lag_us[:]
        out = {
            "latency": {
                "count": count,
                "sum_us": sum_us,
                "max_us": max_us,
                "bucket_us": BUCKET_US,
                "hist": _hist_json(hist),
                "by_kind": {name: _hist_json(h) for name, h in by_kind.items()},
            },
            # How late this process's event loop ran its 5 ms ticks: a generator that
            # cannot keep up shows here before it shows anywhere else.
            "loop_lag_ms": {
                "p50": lags[len(lags) // 2] / 1000 if lags else None,
                "p99": lags[int(len(lags) * 0.99)] / 1000 if lags else None,
                "max": lags[-1] / 1000 if lags else None,
            },
        }
        if per_change:
            out["per_change"] = {str(k): v for k, v in sorted(by_change.items())}
        return out

    async def watch_loop(self) -> None:
        """Sample the event loop's lateness (time past each 5 ms tick)."""
        rec = self.recorder
        while True:
            due = time.monotonic_ns() + int(LAG_TICK_S * 1e9)
            await asyncio.sleep(LAG_TICK_S)
            rec.loop_lag_us.append(max(0, time.monotonic_ns() - due) // 1000)
            rec.loop_lag_at.append(time.time_ns())

    def _rates(self, from_ns: int, to_ns: int) -> dict:
        rec = self.recorder
        lo, hi = from_ns // RATE_BUCKET_NS, to_ns // RATE_BUCKET_NS
        frames = sum(v for k, v in rec.frames.items() if lo <= k < hi)
        items = sum(v for k, v in rec.items.items() if lo <= k < hi)
        for counter in (rec.frames, rec.items):
            for key in [k for k in counter if k < hi]:
                del counter[key]
        return {"frames_in_window": frames, "items_in_window": items}

    async def _loss(self, seq_lo: int, seq_hi: int) -> dict:
        contexts = self.contexts()
        routes: dict[str, list[int]] = {ctx: [] for ctx in contexts}
        record_of: dict[int, tuple[str, str]] = {}
        if contexts and seq_hi > seq_lo:
            async with await psycopg.AsyncConnection.connect(self.args.database_url) as conn:
                cursor = await conn.execute(ROUTES_SQL, [contexts, seq_lo, seq_hi])
                for context, seq, entity, record_id in await cursor.fetchall():
                    routes[context].append(seq)
                    record_of[seq] = (entity, record_id)
        totals = Counter()
        clients_with_loss = 0
        lost_contexts: Counter[str] = Counter()
        cache: dict[tuple, tuple[int, int, int, int, int]] = {}
        for client in self.live:
            client_lost = 0
            for ctx, stream in client.streams.items():
                lo = max(seq_lo, stream.start)
                i, j = bisect_right(stream.seqs, lo), bisect_right(stream.seqs, seq_hi)
                received = stream.seqs[i:j]
                key = (
                    ctx,
                    lo,
                    received.tobytes(),
                    stream.frame_lo.tobytes(),
                    stream.frame_hi.tobytes(),
                )
                figures = cache.get(key)
                if figures is None:
                    expected = routes.get(ctx, [])
                    start = bisect_right(expected, lo)
                    figures = cache[key] = _stream_loss(
                        expected[start:], received, stream, record_of
                    )
                exp, got, coalesced, lost, unexpected = figures
                totals.update(
                    expected=exp,
                    received=got,
                    coalesced=coalesced,
                    lost=lost,
                    unexpected=unexpected,
                )
                if lost:
                    lost_contexts[ctx] += lost
                client_lost += lost
            clients_with_loss += client_lost > 0
        return {
            "items_expected": totals["expected"],
            "items_received": totals["received"],
            "coalesced": totals["coalesced"],
            "lost": totals["lost"],
            "unexpected": totals["unexpected"],
            "clients_with_loss": clients_with_loss,
            "lost_by_context": dict(lost_contexts.most_common(5)),
        }

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


class SlowLoadGen(LoadGen):
    """`--slow`: clients that subscribe, then read nothing (and, with `--slow-return`,
    come back when the server cuts them off)."""

    client_class = SlowClient
    reads = False

    def __init__(self, args: argparse.Namespace, plan: list[list[str]]):
        super().__init__(args, plan)
        self.cut = self.returned = 0
        self.cut_after_s: list[float] = []
        self.cut_clients: set[int] = set()
        self.watcher: asyncio.Task | None = None
        self.returning: set[asyncio.Task] = set()
        self.rng = random.Random(os.getpid())

    async def open_all(self) -> dict:
        if self.args.slow_stagger:
            # Each arrives at its own moment, so later their stalls, cut-offs and
            # returns fall at any time rather than all in the same second.
            for client in self.clients:
                client.arrive_after_s = self.rng.uniform(0, self.args.slow_stagger)
        ready = await super().open_all()
        self.watcher = asyncio.create_task(self._watch())
        return ready

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(SLOW_CHECK_S)
            for client in self.clients:
                ws = client.ws
                if ws is None:
                    continue
                if client.established():
                    # The server answers with a pong; a server that cut the client off has
                    # no connection left and answers with the reset the client missed.
                    with contextlib.suppress(Exception):
                        await ws.ping()
                    continue
                self.cut += 1
                self.cut_after_s.append(round(time.monotonic() - client.subscribed_at, 1))
                self.cut_clients.add(client.index)
                ws.transport.abort()
                client.ws = None
                if self.args.slow_return:
                    task = asyncio.create_task(self._return(client))
                    self.returning.add(task)
                    task.add_done_callback(self.returning.discard)

    async def _return(self, client: SlowClient) -> None:
        await asyncio.sleep(self.rng.uniform(*SLOW_RETURN_S))
        if self.args.slow_fresh:
            client.streams = {}  # subscribe from now: no cursors, no catch-up
        if await client.open(self.args.url, compression=self.args.compression):
            self.returned += 1

    def state(self) -> dict:
        opened = [c for c in self.clients if c.ws is not None]
        return {
            "clients": len(self.clients),
            "open": sum(1 for c in opened if c.established()),
            "cut": self.cut,
            "clients_cut": len(self.cut_clients),
            "returned": self.returned,
            "cut_after_s": self.cut_after_s,
        }

    async def close_all(self) -> None:
        for task in (self.watcher, *self.returning):
            if task is not None:
                task.cancel()
        await super().close_all()


def _hist_json(hist: Counter[int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(hist.items())}


def _stream_loss(
    expected: list[int], received: array, stream: Stream, record_of: dict
) -> tuple[int, int, int, int, int]:
    """(expected, received, coalesced, lost, unexpected) for one client and context."""
    got = set(received)
    coalesced = lost = 0
    frame_lo, frame_hi = stream.frame_lo, stream.frame_hi
    for seq in expected:
        if seq in got:
            continue
        k = bisect_left(frame_hi, seq)
        if k < len(frame_hi) and frame_lo[k] < seq:
            record = record_of.get(seq)
            a, b = bisect_right(received, seq), bisect_right(received, frame_hi[k])
            if any(record_of.get(later) == record for later in received[a:b]):
                coalesced += 1
                continue
        lost += 1
    unexpected = len(got.difference(expected))
    return len(expected), len(received), coalesced, lost, unexpected


async def _small_receive_socket(url: str) -> socket.socket:
    """A socket connected to `url`'s server with the smallest receive buffer (set before
    connecting, so the window the client offers is small from the start)."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port or 80))
    except BaseException:
        sock.close()
        raise
    return sock


def emit(tag: str, body: dict) -> None:
    sys.stdout.write(f"{tag} {json.dumps(body, separators=(',', ':'))}\n")
    sys.stdout.flush()


async def controlled(gen: LoadGen) -> None:
    """Obey commands on stdin until `stop` or end of input."""
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        command, _, rest = line.strip().partition(" ")
        if command in ("", "stop"):
            return
        if command == "drain":
            timeout, _, seq = rest.partition(" ")
            emit("DRAINED", await gen.drain(float(timeout or 10), int(seq) if seq else None))
        elif command == "churn":
            body = json.loads(rest)
            emit("CHURNED", await gen.churn(float(body["share"]), int(body.get("seed", 0))))
        elif command == "report":
            emit("REPORT", await gen.report(json.loads(rest)))
        elif command == "state":
            emit("STATE", gen.state())
        else:
            emit("ERROR", {"unknown": command})


async def timed(gen: LoadGen, duration: float) -> dict:
    """Run `duration` seconds, drain, report on everything."""
    seq_lo = min((s.start for c in gen.live for s in c.streams.values()), default=0)
    from_ns = time.time_ns()
    await asyncio.sleep(duration)
    to_ns = time.time_ns()
    drained = await gen.drain(10)
    async with await psycopg.AsyncConnection.connect(gen.args.database_url) as conn:
        row = await (await conn.execute("SELECT head_seq FROM change_log_state")).fetchone()
    window = {"label": "run", "from_ns": from_ns, "to_ns": to_ns, "seq_lo": seq_lo}
    return {**(await gen.report({**window, "seq_hi": row[0]})), "drained": drained}


async def run(
    args: argparse.Namespace, plan: list[list[str]], gen_class: type[LoadGen] | None = None
) -> int:
    gen = (gen_class or LoadGen)(args, plan)
    ready = await gen.open_all()
    # The connections live until the end: keep them out of the collector's way, so the
    # generator's own pauses do not show up as latency.
    gc.collect()
    gc.freeze()
    watcher = asyncio.create_task(gen.watch_loop())
    emit("READY", ready)
    try:
        if args.control:
            await controlled(gen)
        else:
            body = await timed(gen, args.duration)
            text = json.dumps(body)
            if args.out:
                Path(args.out).write_text(text)
            else:
                emit("REPORT", body)
    finally:
        watcher.cancel()
        await gen.close_all()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        emit("DONE", {"cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "pid": os.getpid()})
    return 0


def plan_from(args: argparse.Namespace) -> list[list[str]]:
    if args.plan:
        plan = json.loads(Path(args.plan).read_text())
    else:
        plan = [json.loads(args.contexts)] * args.clients
    if not all(isinstance(p, list) and all(isinstance(c, str) for c in p) for p in plan):
        sys.exit("--plan holds a list of context lists, one per client")
    return plan


def common_arguments(parser: argparse.ArgumentParser, *, url_help: str) -> None:
    """The options every load generator takes (this one and bench/loadgen_http.py)."""
    parser.add_argument("--url", required=True, help=url_help)
    parser.add_argument("--plan", help="JSON file: a list of context lists, one per client")
    parser.add_argument(
        "--contexts", help="JSON list of contexts for every client, e.g. '[\"overview\"]'"
    )
    parser.add_argument("--clients", type=int, default=1, help="with --contexts")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--control", action="store_true", help="obey commands on stdin")
    parser.add_argument("--duration", type=float, default=10.0, help="without --control")
    parser.add_argument("--timeout", type=float, default=900.0, help="hard limit, seconds")
    parser.add_argument("--connect-concurrency", type=int, default=32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser, url_help="ws://127.0.0.1:<port>/ws/dashboard/updates")
    parser.add_argument(
        "--compression", default=None, choices=[None, "deflate"], help="offer permessage-deflate"
    )
    parser.add_argument("--out", help="without --control: write the report here")
    parser.add_argument(
        "--slow", action="store_true", help="clients stop reading once subscribed (--control)"
    )
    parser.add_argument(
        "--slow-stagger",
        type=float,
        default=0.0,
        help="with --slow: each client first connects at a random moment within S seconds",
    )
    parser.add_argument(
        "--slow-return", action="store_true", help="with --slow: come back when cut off"
    )
    parser.add_argument(
        "--slow-fresh",
        action="store_true",
        help="with --slow-return: come back without cursors (no catch-up)",
    )
    args = parser.parse_args()
    if not args.database_url:
        sys.exit("--database-url (or DATABASE_URL) is needed for the loss check")
    plan = plan_from(args)
    nofile_raise()
    try:
        import uvloop
    except ImportError:
        uvloop = None

    def give_up() -> None:
        sys.stderr.write(f"loadgen {os.getpid()}: --timeout {args.timeout} s reached\n")
        sys.stderr.flush()
        os._exit(3)

    async def bounded() -> int:
        asyncio.get_running_loop().call_later(args.timeout, give_up)
        return await run(args, plan, SlowLoadGen if args.slow else None)

    if uvloop is not None:
        sys.exit(uvloop.run(bounded()))
    sys.exit(asyncio.run(bounded()))


if __name__ == "__main__":
    main()
