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
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import NoReturn

import psycopg

from bench.loadclients import nofile_raise
from bench.loadgen_group import LoadGen
from bench.loadgen_slow import SlowLoadGen


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
    run_bounded(args, SlowLoadGen if args.slow else LoadGen, name="loadgen")


def run_bounded(args: argparse.Namespace, gen_class: type[LoadGen], *, name: str) -> NoReturn:
    """Run a load generator process of `gen_class` on the plan of `args`, on uvloop when
    it is installed; past --timeout the process ends at once (status 3), so a stuck
    generator cannot hold a scenario up."""
    if not args.database_url:
        sys.exit("--database-url (or DATABASE_URL) is needed for the loss check")
    plan = plan_from(args)
    nofile_raise()

    def give_up() -> None:
        sys.stderr.write(f"{name} {os.getpid()}: --timeout {args.timeout} s reached\n")
        sys.stderr.flush()
        os._exit(3)

    async def bounded() -> int:
        asyncio.get_running_loop().call_later(args.timeout, give_up)
        return await run(args, plan, gen_class)

    try:
        import uvloop
    except ImportError:
        sys.exit(asyncio.run(bounded()))
    sys.exit(uvloop.run(bounded()))


if __name__ == "__main__":
    main()
