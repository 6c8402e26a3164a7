"""Bandwidth: what it costs to keep a 50-company view current, differential against reload.

The real stack (the web server, uvicorn as config/serve.py runs it, and `run_publisher`:
bench/harness/stack.py's Stack) on the 100,000-company bench database. The view is one
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
stamped `source = 'bench:<time_ns>'` as by bench/harness/writer.py's Writer; the view's changes
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

import asyncio
import contextlib
import json
import math
import random
import time

from websockets.asyncio.client import connect

from bench.bandwidth_clients import (
    ENDPOINT,
    Differential,
    Job,
    page_totals,
    ping_loop,
    receive_loop,
    reload_loop,
    ws_counters,
)
from bench.bandwidth_figures import converged, differential_figures, naive_figures
from bench.bandwidth_plan import Change, background_records, change_plan, view_records, write_plan
from bench.bandwidth_wire import (
    REQUEST_HEADERS,
    USER_AGENT,
    CountingConnection,
    Exchange,
    HttpClient,
)
from bench.common import bench_database_ready
from bench.harness.processes import stop_on_sigterm
from bench.harness.scenario import logs_directory, results_write, scenario_parser
from bench.harness.stack import PRODUCT_SERVER, Stack, active_connections_tidy

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
VIEW_SIZE = 50
TARGET_PERCENT = 5.0


# -- the run --------------------------------------------------------------------------------------


def stack_env(factor: float) -> dict[str, str]:
    """Server settings compressed by `factor` (config/settings/ and config/serve.py
    read them)."""
    return {
        "REALTIME_HEARTBEAT_S": f"{HEARTBEAT_S / factor:.4f}",
        "WEB_WS_PING_S": f"{WS_PING_S / factor:.4f}",
        "REALTIME_MESSAGE_RATE": str(math.ceil(MESSAGE_RATE * factor)),
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


def run(args) -> dict:
    factor = args.factor
    database_url = bench_database_ready(companies=args.companies)
    active_connections_tidy(database_url)
    rng = random.Random(args.seed)
    with logs_directory("bandwidth") as logs:
        stack = Stack(PRODUCT_SERVER, database_url, logs, env=stack_env(factor))
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
    parser = scenario_parser(__doc__, quick="compress 40x instead of 10x")
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
    }
    print(summary(data))
    results_write("bandwidth", data, quick=args.quick, started=started)


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


if __name__ == "__main__":
    main()
