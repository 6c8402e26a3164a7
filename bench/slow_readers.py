"""Normal clients beside clients that stop reading, on the real stack.

The target: "Bounded outbound buffers ... Fast clients on the same process keep their p99
within +20% of their p99 alone." Before each connection had its outbox
(realtime/outbox.py), one run of two showed normal clients' p99 rising from 29 to 50 ms
while slow readers shared the process: the hub waited on sends to clients that did not
read.

The stack of the latency scenario (bench/latency.py: the web server as the Procfile
starts it, `run_publisher`, the stamped writer at a fixed rate) and N normal clients in
its 60/30/10 mix, connected once and measured in two kinds of phase, alternating:

- (a) alone: the writer runs warm-up plus the measured window, then the drain and the
  harness's loss check (bench/loadgen.py), as one cell of the latency scenario;
- (b) the same, with M slow readers connected first (bench/loadgen.py `--slow`: a socket
  with the smallest receive buffer and a client library that stops reading once one
  frame waits), each subscribed to the busiest contexts: the overview (most of the
  bytes) and one of the ten industries the normal clients follow, in turn
  (`--slow-industries`: more of them; each adds deliveries the hub makes for the slow
  readers while they still take bytes, which is load of its own rather than slowness).
  Once REALTIME_MAX_PENDING_BYTES wait for one, the server closes it with 4413
  `slow_client`. A slow reader cut off comes back after a second or so, as the browser
  client does, and stalls again (`--once`: it stays away): at 200 changes/s one is cut
  off within seconds, and without coming back the process would hold stalled clients for
  a fraction of the window only. At the end of the phase their load generator drops
  them, and the next phase starts once the server holds only the normal clients again.

A slow reader can also be dropped without 4413: the kernel ends a connection whose
receive window stayed closed for REALTIME_UNACKED_TIMEOUT_S (TCP_USER_TIMEOUT, 15 s),
silently (no close frame, no reset, nothing in /metrics). That happens first when less
than REALTIME_MAX_PENDING_BYTES plus the kernel's send buffer reach a reader in that time
(at 100 changes/s it is a race; at 200 the 4413 comes first); the slow readers' own
account of being cut off, beside the server's counter, shows it.

Each phase runs `--rounds` times (a, b, a, b, ...); the report gives the medians and
every round, so noise shows. Once a second, in both kinds of phase alike, the web
process's /metrics (`carbon_realtime_sessions_ended_total{reason="slow_client"}`, its
connections) and its RSS are read: how many slow readers it cut off and when, counted from
the moment they had all subscribed; each slow reader also notes how long it had been
subscribed when it found itself cut off.

The web process's event loop lateness (`carbon_event_loop_lag_seconds`) is read with
them: the share of its 50 ms timer's wakeups that ran more than 5 and 10 ms late.

Variants, each written beside the main run and reported in its table, tell where the
cost lies: `--in-step` (the slow readers connect all at once, so they are cut off and
come back together), `--held` (never cut off: what stalled clients cost) and `--fresh`
(they come back without cursors: what their catch-ups cost).

    python -m bench.slow_readers            # 1,000 normal, 200 slow, 200 changes/s, 3 rounds
    python -m bench.slow_readers --quick    # 200 normal, 50 slow, 200 changes/s, 1 round
    python -m bench.slow_readers --held     # (or --in-step, --fresh) a variant
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, bench_database_ready
from bench.harness.fleet import Fleet, answers_summed, loadgens_more
from bench.harness.processes import stop_on_sigterm
from bench.harness.scenario import (
    Rig,
    logs_directory,
    results_write,
    scenario_parser,
    stack_teardown,
    uvicorn_required,
    workload_arguments,
    workload_of,
)
from bench.harness.stack import (
    PRODUCT_SERVER,
    Stack,
    active_connections_tidy,
    vacuum_churned,
)
from bench.harness.tables import fmt_ms
from bench.harness.writer import Workload, Writer
from bench.slow_readers_web import Sampler, cutoffs, loop_lag, settle, web_figures

TARGET_RATIO = 1.2  # "within +20% of their p99 alone"
# The slow readers first connect over this long, each at a random moment: about one stall
# (at 200 changes/s one is cut off about 9 s after subscribing), so their stalls,
# cut-offs and returns fall at any moment, as those of independent clients do. Connected
# all at once (`--in-step`) they stall, are cut off and come back together, 200 within a
# second or two, every 9 s: a reconnection storm of its own, which the storm test covers.
STAGGER_S = 9.0
# Variants of the main run, each in bench/results/slow_readers_<name>.json beside it, to
# tell where the cost of slow readers lies: connected in step, held without ever being
# cut off (what stalled clients cost), or coming back without cursors (what their
# catch-ups cost).
VARIANTS = {
    "in_step": "the slow readers connected all at once (`--in-step`): 200 cut off and back"
    " within a second or two, every 9 s",
    "held": "the slow readers held, never cut off (`--held`: REALTIME_MAX_PENDING_BYTES 1 GiB,"
    " REALTIME_UNACKED_TIMEOUT_S 600)",
    "fresh": "the slow readers cut off come back without cursors, so owed no catch-up (`--fresh`)",
}
NOTICE_S = 3.0  # for the slow readers to notice the last cut-offs before they are asked
ALONE, SLOW = "alone", "slow"


class SlowFleet(Fleet):
    """Load generators whose clients stop reading once subscribed."""

    name = "slowreaders"
    returning = True  # whether one cut off comes back
    fresh = False  # whether it comes back without cursors

    stagger_s = 0.0  # over how long they first connect

    def loadgen_args(self, index: int) -> list[str]:
        return [
            "--slow",
            *(["--slow-return"] if self.returning else []),
            *(["--slow-fresh"] if self.fresh else []),
            "--slow-stagger",
            str(self.stagger_s),
        ]

    def state_merged(self) -> dict:
        """The load generators' `state`, summed (cut_after_s: every value, sorted)."""
        answers = self.state()
        out = answers_summed(answers, ("open", "cut", "clients_cut", "returned"))
        out["cut_after_s"] = sorted(v for a in answers for v in a["cut_after_s"])
        return out


def slow_plan(industries: list[str], readers: int, per_reader: int) -> list[list[str]]:
    """Each slow reader's contexts: the overview and `per_reader` of the followed
    industries, taken in turn so every industry gets its share."""
    return [
        ["overview"]
        + [f"industry:{industries[(i + k) % len(industries)]}" for k in range(per_reader)]
        for i in range(readers)
    ]


def phase(
    stack: Stack,
    fleet: Fleet,
    writer: Writer,
    workload: Workload,
    args: argparse.Namespace,
    workdir: Path,
    *,
    kind: str,
    round_no: int,
) -> dict:
    """One measured phase, alone or with the slow readers."""
    label = f"{kind}-{round_no}"
    before = web_figures(stack.port) or {"slow_client": 0.0}
    slow_fleet = None
    slow: dict = {}
    if kind == SLOW:
        slow_fleet = SlowFleet(stack.ws_url, stack.database_url, workdir, args.loadgen_timeout)
        slow_fleet.returning = not args.once
        slow_fleet.fresh = args.fresh
        slow_fleet.stagger_s = 0.0 if args.in_step else STAGGER_S
        plan = slow_plan(workload.industries, args.slow, args.slow_industries)
        try:
            # They read nothing: one process holds a thousand of them easily.
            ready = slow_fleet.add(plan, loadgens_more(args.slow), 60 + args.slow / 15)
        except Exception:
            slow_fleet.stop()
            raise
        slow = {"clients": args.slow, "contexts": len(plan[0]), **ready}
    subscribed_at = time.monotonic()
    try:
        with Sampler(stack) as sampler:
            cell = Rig(stack, fleet, writer, workload, args).measure(label=label)
        if slow_fleet is not None:
            # Time for cut-offs of the window's last second to reach the readers (each
            # checks once a second, and may need a ping to draw the reset).
            time.sleep(NOTICE_S)
            slow.update(slow_fleet.state_merged())
    finally:
        if slow_fleet is not None:
            slow_fleet.stop()
    samples = sampler.samples
    rss = [s["rss_kb"] for s in samples if s["rss_kb"]]
    if slow:
        after = slow.pop("cut_after_s")
        slow["cut_after_p50_s"] = statistics.median(after) if after else None
        slow["cut_after_max_s"] = max(after, default=None)
        answered = [s for s in samples if "connections" in s]
        # Slow readers the server still held at the end (beyond the normal clients).
        slow["held_end"] = int(answered[-1]["connections"] - cell["open"]) if answered else None
    cell.update(
        kind=kind,
        round=round_no,
        cutoffs=cutoffs(samples, before["slow_client"], subscribed_at),
        rss_kb_max=max(rss, default=cell["web_rss_kb"]),
        loop_lag=loop_lag(samples),
        metrics_unanswered=sum(1 for s in samples if s.get("unanswered")),
        # (seconds from the slow readers' subscription, cut-offs, connections, RSS MB)
        samples=[
            [
                round(s["at"] - subscribed_at, 1),
                s.get("slow_client"),
                s.get("connections"),
                s["rss_kb"] // 1024,
            ]
            for s in samples
        ],
        slow=slow,
    )
    if slow_fleet is not None:
        cell["settle_s"] = settle(stack, fleet.clients)
    return cell


def phase_line(cell: dict) -> str:
    cut = cell["cutoffs"]
    text = (
        f"{cell['kind']:5} round {cell['round']}: p50={fmt_ms(cell['p50_ms'])}"
        f" p95={fmt_ms(cell['p95_ms'])} p99={fmt_ms(cell['p99_ms'])}"
        f" max={fmt_ms(cell['max_ms'])} ms"
        f" lost={cell['lost']} dup={cell['duplicates']} gaps={cell['gaps']}"
        f" open={cell['open']}/{cell['clients']} deliveries/s={cell['deliveries_per_s']}"
        f" rss={cell['web_rss_kb'] // 1024} MB (max {cell['rss_kb_max'] // 1024})"
        f" cpu web={cell['cpu_cores']['web']} machine={cell['cpu_cores']['machine']}"
    )
    if cell.get("web_gc"):
        text += f" gc={cell['web_gc']}"
    if cell.get("loop_lag"):
        text += f" lag={cell['loop_lag']}"
    slow = cell["slow"]
    if slow:
        text += (
            f" | slow readers {slow['connected']}/{slow['clients']}: server cut off"
            f" {cut['count']} (first {cut['first_s']} s, last {cut['last_s']} s); readers saw"
            f" {slow['cut']} cut-offs ({slow['clients_cut']} readers, after p50"
            f" {slow['cut_after_p50_s']} s, max {slow['cut_after_max_s']} s), came back"
            f" {slow['returned']}, held at the end {slow['held_end']}; settled in"
            f" {cell.get('settle_s')} s"
        )
    return text


def run(database_url: str, workload: Workload, args, workdir: Path, errors: list) -> list[dict]:
    """Connect the normal clients once, then alternate the phases."""
    phases: list[dict] = []
    active_connections_tidy(database_url)
    vacuum_churned(database_url)
    stack = Stack(PRODUCT_SERVER, database_url, workdir, env=args.web_env, gc_trace=args.gc_trace)
    fleet = Fleet(stack.ws_url, database_url, workdir, timeout=args.loadgen_timeout)
    writer = None
    try:
        stack.start()
        writer = Writer(database_url)
        ready = fleet.connect(workload.plan(args.clients))
        print(f"{ready['connected']}/{args.clients} normal clients in {ready['connect_s']} s")
        for round_no in range(1, args.rounds + 1):
            for kind in (ALONE, SLOW):
                started = time.monotonic()
                cell = phase(
                    stack, fleet, writer, workload, args, workdir, kind=kind, round_no=round_no
                )
                cell["phase_s"] = round(time.monotonic() - started, 1)
                print(phase_line(cell), flush=True)
                phases.append(cell)
    except Exception as exc:
        print(f"failed: {exc!r}", flush=True)
        errors.append({"phases_done": len(phases), "error": repr(exc)})
    finally:
        stack_teardown(writer, stack, fleet)
    return phases


def summary(phases: list[dict]) -> dict:
    """Medians of each kind of phase, the ratio of the p99s, loss and cut-offs."""
    out: dict = {}
    for kind in (ALONE, SLOW):
        cells = [c for c in phases if c["kind"] == kind and c["p99_ms"] is not None]
        if not cells:
            return {}
        out[kind] = {
            key: round(statistics.median(c[key] for c in cells), 1)
            for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms")
        }
        out[kind]["rss_mb"] = round(statistics.median(c["web_rss_kb"] for c in cells) / 1024)
        out[kind]["rss_max_mb"] = round(max(c["rss_kb_max"] for c in cells) / 1024)
        out[kind]["web_cpu"] = round(statistics.median(c["cpu_cores"]["web"] for c in cells), 2)
        out[kind]["rounds"] = len(cells)
    out["p99_ratio"] = round(out[SLOW]["p99_ms"] / out[ALONE]["p99_ms"], 2)
    rounds = {c["round"]: {} for c in phases}
    for c in phases:
        rounds[c["round"]][c["kind"]] = c["p99_ms"]
    out["p99_ratio_by_round"] = [
        round(r[SLOW] / r[ALONE], 2) for r in rounds.values() if r.get(SLOW) and r.get(ALONE)
    ]
    out["lost"] = sum(c["lost"] for c in phases)
    out["duplicates"] = sum(c["duplicates"] for c in phases)
    out["gaps"] = sum(c["gaps"] for c in phases)
    out["closed_by_server"] = max(c["closed_by_server"] for c in phases)
    slow = [c for c in phases if c["kind"] == SLOW]
    out["slow_readers"] = sum(c["slow"]["connected"] for c in slow)
    out["readers_cut"] = sum(c["slow"]["clients_cut"] for c in slow)
    out["cut_off"] = sum(c["cutoffs"]["count"] for c in slow)
    out["found_cut"] = sum(c["slow"]["cut"] for c in slow)
    # Found cut off, but not by 4413: the kernel's TCP_USER_TIMEOUT (REALTIME_UNACKED_TIMEOUT_S)
    # also ends a connection whose window stayed closed that long (a few may be cut-offs
    # the readers had not noticed yet when the phase ended, or the other way round).
    out["without_4413"] = sum(max(0, c["slow"]["cut"] - c["cutoffs"]["count"]) for c in slow)
    firsts = [c["cutoffs"]["first_s"] for c in slow if c["cutoffs"]["first_s"] is not None]
    out["cut_first_s"] = statistics.median(firsts) if firsts else None
    afters = [c["slow"]["cut_after_p50_s"] for c in slow if c["slow"]["cut_after_p50_s"]]
    out["cut_after_p50_s"] = statistics.median(afters) if afters else None
    out["ok"] = (
        out["p99_ratio"] <= TARGET_RATIO
        and out["lost"] == 0
        and out["duplicates"] == 0
        and out["closed_by_server"] == 0
    )
    return out


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = scenario_parser(__doc__, quick="200 normal, 50 slow, 1 round")
    parser.add_argument("--clients", type=int, help="normal clients (default 1,000)")
    parser.add_argument("--slow", type=int, help="slow readers (default 200)")
    parser.add_argument("--rate", type=int, help="changes/s (default 200)")
    parser.add_argument("--rounds", type=int, help="phases of each kind (default 3, quick 1)")
    parser.add_argument("--seconds", type=float, help="measured per phase (default 30, quick 15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each window")
    parser.add_argument(
        "--pending-bytes", type=int, help="REALTIME_MAX_PENDING_BYTES for the web server"
    )
    parser.add_argument("--once", action="store_true", help="slow readers cut off stay away")
    parser.add_argument(
        "--held",
        action="store_true",
        help="slow readers are never cut off (REALTIME_MAX_PENDING_BYTES 1 GiB)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="slow readers cut off come back without cursors"
    )
    parser.add_argument(
        "--in-step",
        action="store_true",
        help=f"slow readers connect all at once (default: over {STAGGER_S:g} s)",
    )
    parser.add_argument(
        "--gc-trace", action="store_true", help="log the web process's garbage collections"
    )
    parser.add_argument(
        "--slow-industries",
        type=int,
        default=1,
        help="followed industries each slow reader adds to the overview (default 1, at most 10)",
    )
    workload_arguments(parser)
    parser.add_argument("--loadgen-timeout", type=float, default=1800)
    args = parser.parse_args()
    quick = args.quick
    args.clients = args.clients or (200 if quick else 1000)
    args.slow = args.slow or (50 if quick else 200)
    args.rate = args.rate or 200
    args.rounds = args.rounds or (1 if quick else 3)
    args.seconds = args.seconds or (15.0 if quick else 30.0)
    args.web_env = {}
    if args.pending_bytes:
        args.web_env["REALTIME_MAX_PENDING_BYTES"] = str(args.pending_bytes)
    variants = [name for name in ("in_step", "held", "fresh") if getattr(args, name)]
    if len(variants) > 1 or (variants and (args.once or args.pending_bytes)):
        sys.exit("--in-step, --held and --fresh go alone (not with --once or --pending-bytes)")
    if args.held:
        # Neither the server nor the kernel ends them: what held, stalled clients cost.
        args.web_env["REALTIME_MAX_PENDING_BYTES"] = str(1 << 30)
        args.web_env["REALTIME_UNACKED_TIMEOUT_S"] = "600"
    uvicorn_required()

    stop_on_sigterm()
    started = time.monotonic()
    database_url = bench_database_ready(companies=args.companies)
    workload = workload_of(database_url, args)
    errors: list[dict] = []
    with logs_directory("slow") as logs:
        phases = run(database_url, workload, args, logs, errors)
    data = {
        "clients": args.clients,
        "slow": args.slow,
        "rate": args.rate,
        "rounds": args.rounds,
        "once": args.once,
        "variant": variants[0] if variants else None,
        "stagger_s": 0.0 if args.in_step else STAGGER_S,
        "slow_industries": args.slow_industries,
        "warmup_s": args.warmup,
        "seconds_s": args.seconds,
        "settings": web_settings(database_url, args.web_env),
        "summary": summary(phases),
        "phases": phases,
        "errors": errors,
    }
    name = f"slow_readers_{variants[0]}" if variants else "slow_readers"
    s = data["summary"]
    if s:
        print(
            f"p99 alone {s[ALONE]['p99_ms']} ms, with slow readers {s[SLOW]['p99_ms']} ms:"
            f" {s['p99_ratio']}x (target {TARGET_RATIO}x); lost {s['lost']}; slow readers"
            f" cut off {s['readers_cut']} of {s['slow_readers']}, {s['cut_off']} closes with"
            f" 4413, about {s['without_4413']} drops without"
        )
    results_write(name, data, quick=args.quick, started=started)


def web_settings(database_url: str, env: dict[str, str]) -> dict:
    """The limits the web server ran with: config/settings/ read with its environment."""
    code = (
        "import config.settings as s;"
        "print(s.REALTIME_MAX_PENDING_BYTES, s.REALTIME_SOCKET_SEND_BUFFER_BYTES,"
        " s.REALTIME_SOCKET_NOTSENT_BYTES)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": database_url, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {
        "max_pending_bytes": int(out[0]),
        "socket_send_buffer_bytes": int(out[1]),
        "socket_notsent_bytes": int(out[2]),
    }


if __name__ == "__main__":
    main()
