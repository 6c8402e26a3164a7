"""Bandwidth: what it costs to keep a 50-company view current, differential against reload.

The real stack (the web server, uvicorn as config/serve.py runs it, and `run_publisher`:
bench/harness.py's Stack) on the 100,000-company bench database. The view is one
directory page: `GET /api/companies/` (50 public companies, by name, every field: what
the directory page shows). Two clients keep it current for 10 minutes of simulated time:

- **differential**: loads that page once (the REST snapshot, with its `seq`), opens one
  WebSocket (the `websockets` library, as a browser would: no library keepalive pings,
  the server declines permessage-deflate anyway) and subscribes to the 50
  `company:<uuid>` contexts with `since` = the snapshot's `seq` (PROTOCOL.md: a company's
  context carries its profile and its emission records, all a directory row shows; 50 is
  also the per-connection subscription limit, so `companies` would not fit beside them).
  It applies every item to its copy of the page and sends an application `ping` every
  15 s: docs/protocol.md asks a pinging client to speak within 90 s. The server's own
  WebSocket pings (every 20 s, WEB_WS_PING_S) are counted too, compressed like the rest.
- **naive**: loads the same page, then reloads it every 10 s (60 reloads in 10 min):
  full representation, no `If-None-Match`, one keep-alive HTTP/1.1 connection. Both
  clients send the same browser-like request headers.

Realistic change rate, in 10 real minutes: 3 emission-record corrections per company per
hour on the view's 50 companies (25 changes), plus the demo simulator's default rate
(Procfile: `SIMULATE_RATE`, 2 changes/s) spread over the other public companies (1,200
changes, none in the view: over 100,000 companies only 0.6 of them would land there).
Each is a metric revision like the simulator's (one scope of the record times a factor
drawn from lognormal(0, 0.08)), committed as raw SQL on the writer's own connection and
stamped `source = 'bench:<time_ns>'` as by bench/harness.py's Writer; the view's changes
revise a company's latest non-rejected year, so the directory's `latest_total_tonnes` moves
(the naive client sees them), at uniformly random times.

Time is compressed (10x, `--quick` 40x): the change rate, the reload interval, the
server heartbeat (`REALTIME_HEARTBEAT_S`), the client's ping interval and the message
rate limit are all scaled by the same factor, so the run sends the same *number* of
changes, reloads, heartbeats and pings as 10 real minutes would. Bytes depend on those
counts, not on wall time. Latency: differential = stamp to the item's receipt (not
compressed: one change is delivered as fast at any of these rates); naive = stamp to the
receipt of the first reload whose response shows the new total, also converted to real
time (the wait for the next reload times the factor, plus the request's own time).

Bytes are counted on the client sockets with `getsockopt(TCP_INFO)`: `tcpi_bytes_received`
and `tcpi_bytes_acked` are the kernel's count of the TCP payload each way, so they hold
everything the application layers put on the wire (HTTP status lines and headers,
WebSocket handshake and framing, control frames) whatever the client libraries buffer;
IP/TCP headers are not in them (the report estimates those, and TLS, separately). The
breakdown comes from the clients themselves: every WebSocket frame is counted as it is
parsed (a subclass of the library's connection), every HTTP exchange as the TCP counters'
difference around it, and the parts must add up to the kernel's totals (*unaccounted*).

    python -m bench.bandwidth            # 10x: 60 s measured, about 65 s in all
    python -m bench.bandwidth --quick    # 40x: 15 s measured, about 20 s in all
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import http.client
import json
import math
import os
import random
import socket
import statistics
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from bench.common import bench_database_ready, result_write, verdict
from bench.harness import PRODUCT_SERVER, Stack, active_connections_tidy, stop_on_sigterm

REAL_S = 600.0  # the scenario's 10 minutes
RELOAD_S = 10.0
# The web server's WebSocket ping interval (config/serve.py).
WS_PING_S = 20.0
HEARTBEAT_S = 25.0  # REALTIME_HEARTBEAT_S's default
PING_S = 15.0
MESSAGE_RATE = 30  # REALTIME_MESSAGE_RATE's default, per 10 s
FULL_FACTOR = 10.0
QUICK_FACTOR = 40.0
CORRECTIONS_PER_COMPANY_HOUR = 3.0
BACKGROUND_RATE = 2.0  # SIMULATE_RATE's default (Procfile)
ENDPOINT = "/api/companies/"
VIEW_SIZE = 50
TARGET_PERCENT = 5.0
# A browser's fetch of the page and its WebSocket handshake send headers like these.
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/131.0.0.0 Safari/537.36"
)
REQUEST_HEADERS = {
    "User-Agent": USER_AGENT,
    "Accept": "application/json",
    "Accept-Encoding": "gzip, deflate",
    "Accept-Language": "en-US,en;q=0.9",
}
# For the estimate of what the Internet adds: IPv4 + TCP with timestamps per packet, a
# TLS 1.3 record's header, tag and content type, payload per packet on a 1500-byte MTU.
IP_TCP_HEADER = 52
TLS_RECORD = 22
TLS_RECORD_MAX = 16_384
MSS = 1448
SCOPES = ("scope1_tonnes", "scope2_tonnes", "scope3_tonnes")

VIEW_RECORDS_SQL = """
SELECT c.id::text, e.id::text, e.scope1_tonnes, e.scope2_tonnes, e.scope3_tonnes
  FROM companies c
  JOIN emission_records e ON e.company_id = c.id AND e.year = c.latest_year
 WHERE c.id = ANY(%s::uuid[]) AND e.verification_status <> 'rejected'
"""
# Records elsewhere for the app-wide changes: a 1% sample of the table's pages is plenty
# (a few thousand records) and costs milliseconds, not a scan.
BACKGROUND_SQL = """
SELECT e.id::text, e.company_id::text
  FROM emission_records e TABLESAMPLE SYSTEM (1) REPEATABLE (%s)
  JOIN companies c ON c.id = e.company_id
 WHERE c.is_public AND e.verification_status <> 'rejected' AND c.id <> ALL(%s::uuid[])
"""
REVISE_SQL = {
    scope: f"UPDATE emission_records SET {scope} = round({scope} * %s, 3), source = %s"
    " WHERE id = %s RETURNING total_tonnes"
    for scope in SCOPES
}


# -- bytes on the wire -------------------------------------------------------------------------


def tcp_bytes(sock) -> tuple[int, int]:
    """(sent, received) TCP payload bytes of a connected socket so far, from TCP_INFO
    (`tcpi_bytes_acked` counts the SYN as one byte)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    acked, received = struct.unpack_from("QQ", info, 120)
    return max(acked - 1, 0), received


def frame_bytes(payload: int, *, masked: bool) -> int:
    """A WebSocket frame's size on the wire (RFC 6455: client frames carry a 4-byte mask)."""
    length = 0 if payload < 126 else 2 if payload < 65_536 else 8
    return 2 + length + payload + (4 if masked else 0)


def internet_bytes(sizes: list[int]) -> int:
    """Messages of these sizes with TLS 1.3 records and IPv4/TCP packets around them
    (1500-byte MTU, each message flushed on its own; ACKs not counted)."""
    total = 0
    for size in sizes:
        records = max(1, math.ceil(size / TLS_RECORD_MAX))
        wrapped = size + records * TLS_RECORD
        total += wrapped + math.ceil(wrapped / MSS) * IP_TCP_HEADER
    return total


@dataclass
class Exchange:
    """One HTTP GET as the client saw it."""

    started_ns: int
    done_ns: int
    sent: int
    received: int
    wire_body: int
    body: bytes

    @property
    def headers(self) -> int:
        return self.received - self.wire_body


class HttpClient:
    """GETs on one keep-alive connection (a new one when the server closed it), each
    measured by the socket's TCP counters around it."""

    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None
        # A duplicate of the socket's descriptor: TCP_INFO stays readable even after
        # http.client closed its own (a `Connection: close` answer).
        self.probe: socket.socket | None = None
        self.connections = 0

    def _connect(self) -> None:
        self.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.conn.connect()
        self.probe = socket.socket(fileno=os.dup(self.conn.sock.fileno()))
        self.connections += 1

    def get(self, path: str) -> Exchange:
        if self.conn is None or self.conn.sock is None:
            self._connect()
        try:
            return self._exchange(path)
        except (http.client.RemoteDisconnected, ConnectionError):
            self._connect()  # the server closed an idle keep-alive connection
            return self._exchange(path)

    def _exchange(self, path: str) -> Exchange:
        sent0, received0 = tcp_bytes(self.probe)
        started = time.time_ns()
        self.conn.request("GET", path, headers=REQUEST_HEADERS)
        response = self.conn.getresponse()
        raw = response.read()
        done = time.time_ns()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {raw[:200]!r}")
        sent1, received1 = tcp_bytes(self.probe)
        body = gzip.decompress(raw) if response.getheader("Content-Encoding") == "gzip" else raw
        return Exchange(started, done, sent1 - sent0, received1 - received0, len(raw), body)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.probe is not None:
            self.probe.close()
        self.conn = self.probe = None


@dataclass
class Tally:
    count: int = 0
    bytes: int = 0
    sizes: list[int] = field(default_factory=list)

    def add(self, size: int) -> None:
        self.count += 1
        self.bytes += size
        self.sizes.append(size)


def frame_kind(frame: Frame) -> str:
    if frame.opcode is Opcode.TEXT and frame.fin:
        with contextlib.suppress(ValueError):
            message = json.loads(frame.data)
            if message.get("type") == "batch" and not message.get("changes"):
                return "batch_empty"  # a catch-up that only moves the cursor
            return str(message.get("type"))
        return "text"
    return {Opcode.PING: "ws_ping", Opcode.PONG: "ws_pong", Opcode.CLOSE: "close"}.get(
        frame.opcode, "fragment"
    )


class CountingConnection(ClientConnection):
    """The library's client connection, counting every byte and frame the server sent."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.raw_received = 0
        self.received: dict[str, Tally] = {}
        self.sent: dict[str, Tally] = {}

    def data_received(self, data: bytes) -> None:
        self.raw_received += len(data)
        super().data_received(data)

    def process_event(self, event) -> None:
        if isinstance(event, Frame):
            kind = frame_kind(event)
            self.received.setdefault(kind, Tally()).add(frame_bytes(len(event.data), masked=False))
            if event.opcode is Opcode.PING:
                # The library answers a ping with a pong carrying the same data.
                self.sent.setdefault("ws_pong", Tally()).add(
                    frame_bytes(len(event.data), masked=True)
                )
        super().process_event(event)

    async def send_counted(self, kind: str, message: dict) -> None:
        text = json.dumps(message, separators=(",", ":"))
        self.sent.setdefault(kind, Tally()).add(frame_bytes(len(text.encode()), masked=True))
        await self.send(text)


# -- the view and the writer --------------------------------------------------------------------


@dataclass
class Change:
    due_s: float  # after the window opened, compressed
    view: bool
    company_id: str
    record_id: str
    scope: str
    factor: Decimal
    stamp_ns: int = 0
    total_after: float | None = None


def revision_factor(rng: random.Random) -> Decimal:
    """A metric revision as the simulator makes them, never exactly 1 (a no-op total)."""
    while True:
        factor = Decimal(str(round(rng.lognormvariate(0, 0.08), 4)))
        if factor != 1:
            return factor


def view_records(database_url: str, company_ids: list[str]) -> list[tuple[str, str, list[str]]]:
    """(company, its latest visible record, the scopes large enough that a revision
    moves the total) of each view company that has a latest year."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(VIEW_RECORDS_SQL, [company_ids]).fetchall()
    out = []
    for company, record, *scopes in rows:
        usable = [name for name, value in zip(SCOPES, scopes, strict=True) if value >= 10]
        if usable:
            out.append((company, record, usable))
    return out


def background_records(database_url: str, seed: int, view: list[str]) -> list[tuple[str, str]]:
    """(record, company) of visible records of public companies outside the view."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(BACKGROUND_SQL, [seed, view]).fetchall()


def change_plan(
    view: list[tuple[str, str, list[str]]],
    background: list[tuple[str, str]],
    *,
    view_changes: int,
    background_changes: int,
    window_s: float,
    reload_s: float,
    rng: random.Random,
) -> list[Change]:
    """Every change of the window, in time order. The view's land at random times, but
    not in the last half reload interval, so the last reload can show every one; the
    others are evenly spread (a steady app-wide rate)."""
    plan = []
    for _ in range(view_changes):
        company, record, scopes = rng.choice(view)
        plan.append(
            Change(
                due_s=rng.uniform(0, window_s - reload_s / 2),
                view=True,
                company_id=company,
                record_id=record,
                scope=rng.choice(scopes),
                factor=revision_factor(rng),
            )
        )
    for i in range(background_changes):
        record, company = rng.choice(background)
        plan.append(
            Change(
                due_s=(i + 0.5) * window_s / background_changes,
                view=False,
                company_id=company,
                record_id=record,
                scope=rng.choice(SCOPES),
                factor=revision_factor(rng),
            )
        )
    return sorted(plan, key=lambda c: c.due_s)


def write_plan(database_url: str, plan: list[Change], opened: float, stats: dict) -> None:
    """Commit each change at its time (late ones at once), stamped as bench/harness.py's
    Writer does: the stamp is taken just before the autocommitted UPDATE is sent."""
    durations = []
    late_max = 0.0
    with psycopg.connect(database_url, autocommit=True) as conn:
        for change in plan:
            wait = opened + change.due_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                late_max = max(late_max, -wait)
            change.stamp_ns = time.time_ns()
            row = conn.execute(
                REVISE_SQL[change.scope],
                [change.factor, f"bench:{change.stamp_ns}", change.record_id],
            ).fetchone()
            durations.append(time.time_ns() - change.stamp_ns)
            change.total_after = float(row[0])
    stats.update(
        changes=len(plan),
        late_max_ms=round(late_max * 1000, 1),
        statement_p50_ms=round(statistics.median(durations) / 1e6, 2) if durations else None,
    )


# -- the clients ----------------------------------------------------------------------------------


def page_totals(body: bytes) -> dict[str, dict]:
    """company id -> {latest_year, total} of one directory page."""
    return {
        row["id"]: {"year": row["latest_year"], "total": row["latest_total_tonnes"]}
        for row in json.loads(body)["results"]
    }


def reload_loop(
    client: HttpClient, opened: float, interval: float, count: int, out: list[Exchange]
) -> None:
    """The naive client: a full reload every `interval`, on an absolute schedule."""
    for i in range(1, count + 1):
        wait = opened + i * interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        out.append(client.get(ENDPOINT))


@dataclass
class Differential:
    """What the differential client received, as it applied it."""

    snapshot: Exchange
    page: dict[str, dict]
    stamps: dict[int, int] = field(default_factory=dict)  # stamp -> received ns
    items: int = 0
    unexpected: int = 0
    one_item_frames: list[int] = field(default_factory=list)
    closed: str | None = None

    def apply(self, text: str, received_ns: int) -> None:
        message = json.loads(text)
        if message.get("type") != "batch":
            return
        changes = message["changes"]
        if len(changes) == 1:
            self.one_item_frames.append(frame_bytes(len(text.encode()), masked=False))
        for item in changes:
            self.items += 1
            fields = item.get("fields", {})
            row = self.page.get(fields.get("company_id") or "")
            if item.get("entity") != "emission_record" or row is None:
                self.unexpected += 1
                continue
            source = fields.get("source") or ""
            if source.startswith("bench:"):
                self.stamps.setdefault(int(source.split(":")[1]), received_ns)
            if fields.get("year") == row["year"] and "total_tonnes" in fields:
                row["total"] = fields["total_tonnes"]


async def receive_loop(ws: CountingConnection, state: Differential) -> None:
    try:
        async for text in ws:
            state.apply(text, time.time_ns())
    except Exception as exc:  # a closed connection ends the run's figures, not the run
        state.closed = repr(exc)
    if ws.close_code is not None and state.closed is None:
        state.closed = f"closed {ws.close_code} {ws.close_reason}"


async def ping_loop(ws: CountingConnection, opened: float, interval: float, until: float) -> None:
    """Application pings on an absolute schedule from the window's start."""
    loop = asyncio.get_running_loop()
    i = 1
    while opened + i * interval < until:
        await asyncio.sleep(max(0.0, opened + i * interval - loop.time()))
        try:
            await ws.send_counted("ping", {"type": "ping", "ref": i})
        except ConnectionClosed:
            return  # the receiver records why
        i += 1


class Job(threading.Thread):
    """A thread whose exception is raised again by `check()`, in the caller."""

    def __init__(self, target, *args):
        super().__init__(daemon=True)
        self.work, self.work_args = target, args
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work(*self.work_args)
        except BaseException as exc:
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def ws_counters(ws: CountingConnection) -> dict:
    """The kernel's counters and the connection's own, read at the same moment."""
    sent, received = tcp_bytes(ws.transport.get_extra_info("socket"))
    return {
        "tcp_sent": sent,
        "tcp_received": received,
        "raw_received": ws.raw_received,
        "received": {k: {"count": t.count, "bytes": t.bytes} for k, t in ws.received.items()},
        "received_sizes": {k: list(t.sizes) for k, t in ws.received.items()},
        "sent": {k: {"count": t.count, "bytes": t.bytes} for k, t in ws.sent.items()},
    }


async def session(stack: Stack, args, plan: list[Change], naive: HttpClient) -> dict:
    """Both clients over one window; the writer and the naive reloads run in threads."""
    factor = args.factor
    window_s = REAL_S / factor
    reload_s = RELOAD_S / factor
    reloads = round(REAL_S / RELOAD_S)
    first = naive.get(ENDPOINT)
    snapshot_client = HttpClient(stack.port)
    snapshot = snapshot_client.get(ENDPOINT)
    snapshot_client.close()
    # The platform does not stand still while a page loads: the first app-wide change
    # is published between the snapshot and the subscribe, as it mostly would at 2/s and a
    # browser's few hundred ms from one to the other. (Then every context's catch-up has
    # nothing to send but the cursor's advance.)
    first_elsewhere = next(c for c in plan if not c.view)
    plan.remove(first_elsewhere)
    write_plan(stack.database_url, [first_elsewhere], time.monotonic(), {})
    stack.publisher_idle(10)
    head = json.loads(snapshot.body)
    state = Differential(snapshot=snapshot, page=page_totals(snapshot.body))
    contexts = [f"company:{company}" for company in state.page]
    async with connect(
        stack.ws_url,
        create_connection=CountingConnection,
        ping_interval=None,  # a browser cannot send WebSocket pings: application pings only
        user_agent_header=USER_AGENT,
        additional_headers={"Accept-Language": REQUEST_HEADERS["Accept-Language"]},
    ) as ws:
        hello = json.loads(await ws.recv())
        await ws.send_counted(
            "subscribe",
            {
                "type": "subscribe",
                "contexts": contexts,
                "since": head["seq"],
                "epoch": hello["epoch"],
            },
        )
        subscribed = json.loads(await ws.recv())
        if subscribed.get("type") != "subscribed" or subscribed.get("rejected"):
            raise RuntimeError(f"subscribe refused: {subscribed}")
        loop = asyncio.get_running_loop()
        opened, opened_loop = time.monotonic(), loop.time()
        opened_ns = time.time_ns()
        stats: dict = {}
        exchanges: list[Exchange] = []
        threads = [
            Job(write_plan, stack.database_url, plan, opened, stats),
            Job(reload_loop, naive, opened, reload_s, reloads, exchanges),
        ]
        for thread in threads:
            thread.start()
        receiver = asyncio.create_task(receive_loop(ws, state))
        pinger = asyncio.create_task(
            ping_loop(ws, opened_loop, args.ping_s / factor, opened_loop + window_s)
        )
        await asyncio.sleep(max(0.0, opened_loop + window_s - loop.time()))
        counters = ws_counters(ws)
        for thread in threads:
            await asyncio.to_thread(thread.join, 60)
            thread.check()
        # Late items (there should be none) still count for the loss check.
        await asyncio.to_thread(stack.publisher_idle, 30)
        await asyncio.sleep(0.5)
        pinger.cancel()
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(pinger, receiver)
    return {
        "opened_ns": opened_ns,
        "window_s": window_s,
        "first": first,
        "exchanges": exchanges,
        "state": state,
        "counters": counters,
        "writer": stats,
        "heartbeat_ms_in_hello": hello["policy"].get("heartbeat_ms"),
    }


# -- figures --------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_figures(values_ms: list[float]) -> dict:
    return {
        "count": len(values_ms),
        "p50_ms": _round(percentile(values_ms, 0.5)),
        "p99_ms": _round(percentile(values_ms, 0.99)),
        "max_ms": _round(max(values_ms, default=None)),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def differential_figures(run: dict, view: list[Change]) -> dict:
    state: Differential = run["state"]
    counters = run["counters"]
    snapshot = state.snapshot
    received = counters["received"]
    frames = sum(t["bytes"] for t in received.values())
    handshake = counters["raw_received"] - frames
    sent_frames = sum(t["bytes"] for t in counters["sent"].values())
    latency, lost, coalesced, late = [], 0, 0, 0
    window_end_ns = run["opened_ns"] + run["window_s"] * 1e9
    for change in view:
        got = state.stamps.get(change.stamp_ns)
        if got is not None:
            latency.append((got - change.stamp_ns) / 1e6)
            late += got > window_end_ns
            continue
        # PROTOCOL.md: changes of one record in one batch may be merged into the last.
        merged = any(
            c.record_id == change.record_id
            and c.stamp_ns > change.stamp_ns
            and c.stamp_ns in state.stamps
            for c in view
        )
        coalesced += merged
        lost += not merged
    count = lambda kind: received.get(kind, {"count": 0})["count"]  # noqa: E731
    size = lambda kind: received.get(kind, {"bytes": 0})["bytes"]  # noqa: E731
    known = {"hello", "subscribed", "batch", "batch_empty", "heartbeat", "pong"}
    known |= {"ws_ping", "ws_pong"}
    return {
        "received": {
            "total": snapshot.received + counters["tcp_received"],
            "snapshot_headers": snapshot.headers,
            "snapshot_body": snapshot.wire_body,
            "handshake": handshake,
            "hello_subscribed": size("hello") + size("subscribed"),
            "catch_up_empty": size("batch_empty"),
            "batches": size("batch"),
            "heartbeats": size("heartbeat"),
            "pongs": size("pong"),
            "ws_control": size("ws_ping") + size("ws_pong"),
            "other": sum(t["bytes"] for k, t in received.items() if k not in known),
            "unaccounted": counters["tcp_received"] - counters["raw_received"],
        },
        "sent": {
            "total": snapshot.sent + counters["tcp_sent"],
            "snapshot_request": snapshot.sent,
            "handshake": counters["tcp_sent"] - sent_frames,
            "subscribe": counters["sent"].get("subscribe", {"bytes": 0})["bytes"],
            "pings": counters["sent"].get("ping", {"bytes": 0})["bytes"],
            "ws_pongs": counters["sent"].get("ws_pong", {"bytes": 0})["bytes"],
        },
        "counts": {
            "catch_up_empty": count("batch_empty"),
            "batches": count("batch"),
            "items": state.items,
            "unexpected_items": state.unexpected,
            "heartbeats": count("heartbeat"),
            "pongs": count("pong"),
            "pings_sent": counters["sent"].get("ping", {"count": 0})["count"],
            "ws_pings": count("ws_ping"),
        },
        "one_item_frame_bytes": percentile(state.one_item_frames, 0.5),
        "internet_estimate": internet_bytes(
            [snapshot.received]
            + [handshake]
            + [s for sizes in counters["received_sizes"].values() for s in sizes]
        ),
        "latency": latency_figures(latency),
        "delivered": len(latency),
        "after_window": late,
        "coalesced": coalesced,
        "lost": lost,
        "closed": state.closed,
    }


def shown_by(change: Change, later: list[Change], exchanges: list) -> tuple | None:
    """The first reload (started ns, done ns) whose page shows `change` or a later change
    of the same record: its company's total equals one of theirs."""
    totals = {c.total_after for c in later}
    for exchange, page in exchanges:
        if exchange.done_ns > change.stamp_ns and page[change.company_id]["total"] in totals:
            return exchange.started_ns, exchange.done_ns
    return None


def naive_figures(run: dict, view: list[Change], factor: float) -> dict:
    loads = [run["first"], *run["exchanges"]]
    pages = [(e, page_totals(e.body)) for e in run["exchanges"]]
    compressed, real, unseen = [], [], 0
    for change in view:
        later = [
            c for c in view if c.record_id == change.record_id and c.stamp_ns >= change.stamp_ns
        ]
        seen = shown_by(change, later, pages)
        if seen is None:
            unseen += 1
            continue
        started, done = seen
        compressed.append((done - change.stamp_ns) / 1e6)
        # The wait for the next reload is what the compression shortened; the request's
        # own time (and a change published during it) is not.
        waited = max(0, started - change.stamp_ns)
        real.append((waited * factor + done - max(started, change.stamp_ns)) / 1e6)
    reloads = run["exchanges"]
    first = loads[0]
    return {
        "received": {
            "total": sum(e.received for e in loads),
            "first_headers": first.headers,
            "first_body": first.wire_body,
            "reloads": sum(e.received for e in reloads),
            "headers": sum(e.headers for e in loads),
            "bodies": sum(e.wire_body for e in loads),
        },
        "sent": {"total": sum(e.sent for e in loads)},
        "loads": len(loads),
        "reloads": len(reloads),
        "reload_bytes": percentile([e.received for e in reloads], 0.5),
        "reload_headers": percentile([e.headers for e in reloads], 0.5),
        "request_bytes": percentile([e.sent for e in reloads], 0.5),
        "request_ms_p50": _round(
            percentile([(e.done_ns - e.started_ns) / 1e6 for e in reloads], 0.5)
        ),
        "body_gzip_bytes": len(gzip.compress(first.body)),
        "body_bytes": len(first.body),
        "internet_estimate": internet_bytes([e.received for e in loads]),
        "latency_compressed": latency_figures(compressed),
        "latency_real": latency_figures(real),
        "shown": len(compressed),
        "not_shown": unseen,
    }


def converged(run: dict) -> dict:
    """The differential client's page against the last reload's."""
    last = page_totals(run["exchanges"][-1].body) if run["exchanges"] else {}
    mine = run["state"].page
    differ = [c for c in last if last[c]["total"] != mine.get(c, {}).get("total")]
    return {"companies": len(last), "differ": len(differ)}


# -- the run --------------------------------------------------------------------------------------


def stack_env(factor: float) -> dict[str, str]:
    """Server settings compressed by `factor` (config/settings.py and config/serve.py
    read them)."""
    return {
        "REALTIME_HEARTBEAT_S": f"{HEARTBEAT_S / factor:.4f}",
        "WEB_WS_PING_S": f"{WS_PING_S / factor:.4f}",
        "REALTIME_MESSAGE_RATE": str(math.ceil(MESSAGE_RATE * factor)),
    }


def run(args) -> dict:
    factor = args.factor
    database_url = bench_database_ready(companies=args.companies)
    active_connections_tidy(database_url)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-bandwidth-") as tmp:
        workdir = Path(os.environ.get("BENCH_LOG_DIR") or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        stack = Stack(PRODUCT_SERVER, database_url, workdir, env=stack_env(factor))
        stack.start()
        naive = HttpClient(stack.port)
        try:
            # Which 50 companies the page shows; each client then makes its own first load.
            setup = HttpClient(stack.port)
            page = page_totals(setup.get(ENDPOINT).body)
            setup.close()
            if len(page) != VIEW_SIZE:
                raise RuntimeError(f"{ENDPOINT} gave {len(page)} companies, not {VIEW_SIZE}")
            view = view_records(database_url, list(page))
            background = background_records(database_url, args.seed, list(page))
            view_changes = round(VIEW_SIZE * CORRECTIONS_PER_COMPANY_HOUR * REAL_S / 3600)
            plan = change_plan(
                view,
                background,
                view_changes=view_changes,
                background_changes=round(args.background_rate * REAL_S),
                window_s=REAL_S / factor,
                reload_s=RELOAD_S / factor,
                rng=rng,
            )
            view_plan = [c for c in plan if c.view]
            background_changes = len(plan) - len(view_plan)
            outcome = asyncio.run(session(stack, args, plan, naive))
            outcome["naive_connections"] = naive.connections
        finally:
            naive.close()
            stack.stop()
    return {
        "outcome": outcome,
        "view_companies_changeable": len(view),
        "view_changes": len(view_plan),
        "background_changes": background_changes,
        "differential": differential_figures(outcome, view_plan),
        "naive": naive_figures(outcome, view_plan, factor),
        "converged": converged(outcome),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="compress 40x instead of 10x")
    parser.add_argument("--factor", type=float, help="time compression (default 10, quick 40)")
    parser.add_argument(
        "--ping-s",
        type=float,
        default=PING_S,
        help="the client's ping interval in real seconds",
    )
    parser.add_argument("--background-rate", type=float, default=BACKGROUND_RATE)
    parser.add_argument("--companies", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.factor = args.factor or (QUICK_FACTOR if args.quick else FULL_FACTOR)
    stop_on_sigterm()
    started = time.monotonic()
    figures = run(args)
    diff, naive = figures["differential"], figures["naive"]
    outcome = figures.pop("outcome")
    data = {
        "mode": "quick" if args.quick else "full",
        "factor": args.factor,
        "real_s": REAL_S,
        "window_s": outcome["window_s"],
        "reload_s": RELOAD_S,
        "heartbeat_s": HEARTBEAT_S,
        "ping_s": args.ping_s,
        "endpoint": ENDPOINT,
        "view_size": VIEW_SIZE,
        "corrections_per_company_hour": CORRECTIONS_PER_COMPANY_HOUR,
        "background_rate": args.background_rate,
        "writer": outcome["writer"],
        "naive_connections": outcome["naive_connections"],
        "heartbeat_ms_in_hello": outcome["heartbeat_ms_in_hello"],
        "ratio_received": round(naive["received"]["total"] / diff["received"]["total"], 1),
        "ratio_both_ways": round(
            (naive["received"]["total"] + naive["sent"]["total"])
            / (diff["received"]["total"] + diff["sent"]["total"]),
            1,
        ),
        **figures,
        "duration_s": round(time.monotonic() - started, 1),
    }
    path = result_write("bandwidth", data)
    print(summary(data))
    print(f"wrote {path} in {data['duration_s']:.0f} s")


def summary(data: dict) -> str:
    diff, naive = data["differential"], data["naive"]
    return (
        f"{data['factor']:.0f}x: differential {diff['received']['total']:,} B received"
        f" ({diff['received']}), sent {diff['sent']['total']:,} B, counts {diff['counts']};"
        f" naive {naive['received']['total']:,} B received ({naive['received']}) in"
        f" {naive['loads']} loads, sent {naive['sent']['total']:,} B; ratio"
        f" {data['ratio_received']}x received, {data['ratio_both_ways']}x both ways;"
        f" latency differential {diff['latency']}, naive {naive['latency_compressed']}"
        f" (real time {naive['latency_real']}); lost {diff['lost']}, coalesced"
        f" {diff['coalesced']}, not shown {naive['not_shown']}, converged {data['converged']};"
        f" one-item frame {diff['one_item_frame_bytes']} B vs reload {naive['reload_bytes']} B;"
        f" writer {data['writer']}"
    )


# -- the report section -----------------------------------------------------------------------


def _kb(value: int) -> str:
    return f"{value / 1000:,.1f} kB"


def fmt_ms(value) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def report_section(data: dict) -> list[str]:
    """This scenario's part of docs/benchmarks.md."""
    m = data["machine"]
    diff, naive = data["differential"], data["naive"]
    dr, nr = diff["received"], naive["received"]
    counts = diff["counts"]
    frame = diff["one_item_frame_bytes"]
    percent = 100 * frame / naive["reload_bytes"] if frame and naive["reload_bytes"] else None
    factor = data["factor"]
    minutes = data["real_s"] / 60
    lines = [
        "## Bandwidth: differential updates against reloading",
        "",
        f"Measured {m['date']} on {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}"
        f" (`python -m bench.bandwidth{' --quick' if data['mode'] == 'quick' else ''}`,"
        f" {data['duration_s']:.0f} s): the web server (uvicorn) and `run_publisher` on the"
        " 100,000-company"
        f" bench database. A {data['view_size']}-company view (`GET {data['endpoint']}`, one"
        f" directory page, every field) kept current for {minutes:.0f} minutes by two"
        " clients: *differential* loads it once and follows the companies' 50"
        " `company:<uuid>` contexts over one WebSocket (an application ping every"
        f" {data['ping_s']:.0f} s); *naive* reloads it every {data['reload_s']:.0f} s (no"
        " ETag, keep-alive). Changes: "
        f"{data['corrections_per_company_hour']:g} corrections per company per hour on the"
        f" view ({data['view_changes']} in {minutes:.0f} min) and the simulator's"
        f" {data['background_rate']:g} changes/s elsewhere ({data['background_changes']:,}),"
        f" committed as raw SQL. Time was compressed {factor:g}x ({data['window_s']:.0f} s):"
        " change rate, reload interval, server heartbeat and client pings all scaled"
        f" together, so the counts (and the bytes) are those of {minutes:.0f} real minutes."
        " Bytes are TCP payload counted by the kernel on the client sockets (`TCP_INFO`):"
        " HTTP headers and WebSocket framing included, IP/TCP headers and TLS not.",
        "",
        "| figure | target | measured | |",
        "| --- | --- | --- | --- |",
        "| differential payload for one changed metric on a 50-company view | under 5% of a"
        f" full reload | {_pct(percent)}: one batch frame with one item, {frame} B, against one"
        f" reload, {naive['reload_bytes']:,} B (headers and body) |"
        f" {verdict(percent is not None and percent < TARGET_PERCENT)} |",
        f"| bytes received to keep the view current for {minutes:.0f} min | | differential"
        f" {_kb(dr['total'])}, naive {_kb(nr['total'])}: **{data['ratio_received']}x** less"
        f" ({data['ratio_both_ways']}x counting what the clients sent too) | |",
        "| latency, differential: commit to client | | p50"
        f" {fmt_ms(diff['latency']['p50_ms'])} ms, p99 {fmt_ms(diff['latency']['p99_ms'])} ms"
        f" ({diff['latency']['count']} changes) | |",
        "| latency, naive: commit to the reload that shows it | | p50"
        f" {_s(naive['latency_real']['p50_ms'])} s, p99"
        f" {_s(naive['latency_real']['p99_ms'])} s in real time"
        f" (measured compressed: p50 {fmt_ms(naive['latency_compressed']['p50_ms'])} ms, p99"
        f" {fmt_ms(naive['latency_compressed']['p99_ms'])} ms) | |",
        f"| loss | zero lost | differential: {diff['delivered']} of {data['view_changes']}"
        f" changes delivered, {diff['lost']} lost; naive: {naive['shown']} shown,"
        f" {naive['not_shown']} never shown | {verdict(_no_loss(data))} |",
        "",
        f"Where the bytes went, {minutes:.0f} minutes:",
        "",
        "| | differential | naive |",
        "| --- | ---: | ---: |",
        f"| initial load: headers / body | {dr['snapshot_headers']:,} / {dr['snapshot_body']:,}"
        f" B | {nr['first_headers']:,} / {nr['first_body']:,} B |",
        f"| reloads: {naive['reloads']}, {naive['reload_bytes']:,} B each (median) | |"
        f" {_kb(nr['reloads'])} |",
        f"| WebSocket handshake | {dr['handshake']:,} B | |",
        f"| `hello` and `subscribed` (50 contexts) | {dr['hello_subscribed']:,} B | |",
        f"| catch-up frames without items: {counts['catch_up_empty']} |"
        f" {dr['catch_up_empty']:,} B | |",
        f"| batches: {counts['batches']} frames, {counts['items']} items | {dr['batches']:,} B | |",
        f"| heartbeats: {counts['heartbeats']} | {dr['heartbeats']:,} B | |",
        f"| pongs to the client's {counts['pings_sent']} pings | {dr['pongs']:,} B | |",
        f"| WebSocket pings and pongs from the server: {counts['ws_pings']} |"
        f" {dr['ws_control']:,} B | |",
        f"| other frames / not yet parsed | {dr['other']:,} / {dr['unaccounted']:,} B | |",
        f"| **received in all** | **{_kb(dr['total'])}** | **{_kb(nr['total'])}** |",
        f"| sent by the client | {_kb(diff['sent']['total'])} | {_kb(naive['sent']['total'])} |",
        f"| estimate with TLS 1.3 and IPv4/TCP headers (1500-byte MTU), received |"
        f" {_kb(diff['internet_estimate'])} | {_kb(naive['internet_estimate'])} |",
        "",
        *bandwidth_notes(data),
        "",
    ]
    return lines


def _s(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _no_loss(data: dict) -> bool:
    diff, naive = data["differential"], data["naive"]
    return diff["lost"] == 0 and naive["not_shown"] == 0 and data["converged"]["differ"] == 0


def bandwidth_notes(data: dict) -> list[str]:
    diff, naive = data["differential"], data["naive"]
    dr = diff["received"]
    counts = diff["counts"]
    factor = data["factor"]
    minutes = data["real_s"] / 60
    setup = sum(
        dr[k]
        for k in (
            "snapshot_headers",
            "snapshot_body",
            "handshake",
            "hello_subscribed",
            "catch_up_empty",
        )
    )
    gzip_total = naive["received"]["total"] - naive["loads"] * (
        naive["body_bytes"] - naive["body_gzip_bytes"]
    )
    notes = [
        f"- Setting up cost the differential client {_kb(setup)} (snapshot, handshake,"
        f" `hello`, `subscribed`, catch-up); following the view for {minutes:.0f} minutes"
        f" then cost {_kb(dr['total'] - setup)}: {_kb(dr['batches'])} of batches for"
        f" {data['view_changes']} changes (median one-item frame"
        f" {diff['one_item_frame_bytes']} B, of which 70 to 85 B are the bench's stamp in"
        f" `source`) and {_kb(dr['heartbeats'] + dr['pongs'])} of"
        " heartbeats and pongs that keep the link checked. The naive client pays the whole"
        " page on every reload, whether or not anything changed.",
        f"- Catch-up frames without items: one app-wide change was published between the"
        f" snapshot and the subscribe (at {data['background_rate']:g}/s and a browser's few"
        " hundred ms from one to the other, that is the common case), so each context's"
        " catch-up had nothing to send but its cursor's advance: one `batch` with no"
        f" `changes` per context, {counts['catch_up_empty']} frames,"
        f" {_kb(dr['catch_up_empty'])} on every page load.",
        f"- The naive latency is the reload interval: a change waits on average half of it"
        f" for the next reload. Measured in compressed time (reload every"
        f" {data['reload_s'] / factor:.2f} s), it is converted to real time by multiplying the"
        f" wait for the next reload by {factor:g} and adding the request's own time"
        f" (p50 {naive['request_ms_p50']} ms). The differential latency needs no conversion:"
        " a change travels alone at these rates.",
        f"- The server sends the JSON uncompressed (no gzip middleware, and the web server"
        " declines permessage-deflate: config/serve.py says why). Were a proxy to gzip the"
        " REST answers, a page would be"
        f" {naive['body_gzip_bytes']:,} B instead of {naive['body_bytes']:,} B and the naive"
        f" client would receive about {_kb(gzip_total)}: still"
        f" {gzip_total / dr['total']:.1f}x the differential client.",
        f"- The differential client's page matched the last reload for"
        f" {data['converged']['companies'] - data['converged']['differ']} of"
        f" {data['converged']['companies']} companies at the end; "
        f"{diff['coalesced']} changes arrived merged into a later one of the same record,"
        f" {diff['after_window']} after the window. The naive client used"
        f" {data['naive_connections']} keep-alive connection(s).",
    ]
    if diff.get("closed"):
        notes.append(f"- The WebSocket ended early: {diff['closed']}.")
    return notes


if __name__ == "__main__":
    main()
