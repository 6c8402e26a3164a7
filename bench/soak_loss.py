"""Loss soak: the latency target's step (2,000 WebSocket clients, 200 changes/s), ten times
over, on the whole `make run` process set, the first time on a brand-new database.

The database is dropped and created again (`CREATE DATABASE`, `manage.py migrate`,
`manage.py seed_demo`, which also resets the change log); every run then starts the
Procfile's web, publisher, Celery worker and beat (bench/soak.py), connects the clients
in load generator processes (bench/loadgen.py, the 60/30/10 mix of bench/harness/writer.py's
Workload), writes at the rate for warm-up plus the measured window with latency's stamped writer,
waits until the publisher is idle and every client reached its contexts' heads, checks
what each client received against the change log, and stops everything. Runs after the
first reuse the database (and its change log).

The loss check (bench/loadgen.py) covers every change routed to a client's contexts from
the moment it subscribed to the end of the run: the writer's, the warm-up's and whatever
the worker published meanwhile (benchmark recomputes). Per run: *lost* (in the log, never
received, nor merged into a later change of the same record in one frame), *missing* (a
batch whose `prev_seq` was above the client's cursor: a gap the server should have filled),
*duplicated* (an item at or below what the client already had: a repeat or out of order).

    python -m bench.soak_loss              # 10 runs, 2,000 clients, 200/s, 100,000 companies
    python -m bench.soak_loss --quick      # 2 runs, 100 clients, 50/s, 2,000 companies
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.common import BENCH_DB, verdict
from bench.harness.fleet import Fleet
from bench.harness.processes import stop_on_sigterm
from bench.harness.scenario import (
    Rig,
    logs_directory,
    results_write,
    scenario_parser,
    stack_teardown,
    workload_arguments,
    workload_of,
)
from bench.harness.stack import active_connections_tidy
from bench.harness.tables import fmt_ms_whole, measured_on
from bench.harness.writer import Workload, Writer
from bench.soak import SOAK_PROCESSES, ProcfileStack, fresh_database, loss_figures

NAME = "soak_loss"
TARGET_RUNS = 10
TARGET_STEP = (2000, 200)


def one_run(index: int, database_url: str, workload: Workload, args, workdir: Path) -> dict:
    """Start the process set, connect, write, check, stop: one run's figures."""
    started = time.monotonic()
    active_connections_tidy(database_url)
    stack = ProcfileStack(database_url, workdir)
    fleet = Fleet(stack.ws_url, database_url, workdir, timeout=args.loadgen_timeout)
    writer = None
    run: dict = {"run": index, "fresh_database": index == 1}
    try:
        stack.start()
        run["celery_ready_s"] = stack.celery_ready_s
        ready = fleet.connect(workload.plan(args.clients))
        writer = Writer(database_url)
        rig = Rig(stack, fleet, writer, workload, args)
        cell = rig.measure(label=f"{NAME}-{index}", loss_seq_lo=0)
        run.update(
            connected=ready["connected"],
            connect_s=ready["connect_s"],
            open_at_end=cell["open"],
            closed_by_server=cell["closed_by_server"],
            changes_written=cell["writer"]["changes"],
            **loss_figures(cell),
            behind_after_drain=cell["behind_after_drain"],
            web_rss_kb=cell["web_rss_kb"],
            seq_hi=cell["seq_hi"],
        )
    except Exception as exc:
        run["error"] = repr(exc)
    finally:
        stack_teardown(writer, stack, fleet)
    run["run_s"] = round(time.monotonic() - started, 1)
    return run


def run_clean(run: dict, clients: int) -> bool:
    """Every client connected and stayed, nothing lost, missing, duplicated or behind."""
    return (
        "error" not in run
        and run["connected"] == clients
        and run["open_at_end"] == clients
        and run["lost"] == run["missing"] == run["duplicated"] == 0
        and run["behind_after_drain"] == 0
    )


def run_line(run: dict) -> str:
    if "error" in run:
        return f"run {run['run']}: failed: {run['error']} ({run['run_s']} s)"
    return (
        f"run {run['run']}: {run['connected']} connected, {run['changes_written']} written,"
        f" {run['items_received']}/{run['items_expected']} items, lost {run['lost']},"
        f" missing {run['missing']}, duplicated {run['duplicated']}, unexpected"
        f" {run['unexpected']}, behind {run['behind_after_drain']}, p50/p99"
        f" {run['p50_ms']}/{run['p99_ms']} ms ({run['run_s']} s)"
    )


# -- the report section -------------------------------------------------------------------------


def report_section(data: dict) -> list[str]:
    """This scenario's part of docs/benchmarks.md."""
    runs = data["runs"]
    clients, rate = data["clients"], data["rate"]
    clean = [r for r in runs if run_clean(r, clients)]
    at_target = (clients, rate) == TARGET_STEP and len(runs) >= TARGET_RUNS
    db = data["database"]
    measured = (
        f"{len(clean)} of {len(runs)} runs clean;"
        f" lost {sum(r.get('lost', 0) for r in runs)},"
        f" missing {sum(r.get('missing', 0) for r in runs)},"
        f" duplicated {sum(r.get('duplicated', 0) for r in runs)}"
    )
    ok = len(clean) == len(runs) == data["runs_asked"]
    lines = [
        "## Loss soak",
        "",
        f"{measured_on(data)}"
        f" (`{data['command']}`, {data['duration_s'] / 60:.1f} min): {len(runs)} runs of"
        f" {clients:,} WebSocket clients (60/30/10, as in the latency section) at {rate:g}"
        f" changes/s, each on a newly started `make run` process set"
        f" ({', '.join(data['processes'])}, by their Procfile lines; DEBUG off). The first run"
        f" used a database created for it ({db['companies']:,} companies: create"
        f" {db['create_s']} s, migrate {db['migrate_s']} s, `seed_demo` {db['seed_s']} s,"
        " which also resets the change log); the others reused it. Each run: start-up, the"
        f" clients connect, {data['warmup_s']:.0f} s warm-up and {data['seconds_s']:.0f} s"
        " measured at the rate, the publisher idle and every client at its contexts' heads,"
        " then the check of every change routed to a client's contexts since it subscribed"
        " (the writer's and the Celery worker's benchmark recomputes alike) against what it"
        " received.",
        "",
        "| figure | target | measured | |",
        "| --- | --- | --- | --- |",
        f"| loss and order, {clients:,} clients x {rate:g} changes/s, {len(runs)} runs, full"
        f" process set | zero lost, zero missing, zero duplicated in every run | {measured} |"
        f" {verdict(ok) if at_target else 'smaller than the target: not judged'} |",
        "",
        "*Lost*: routed to the client's context in the change log, never received (nor merged"
        " into a later change of the same record in one frame: *coalesced*). *Missing*: a batch"
        " whose `prev_seq` was above the client's cursor (a gap the server should have filled"
        " from the log). *Duplicated*: an item at or below what the client had (a repeat, or"
        " out of order). *Unexpected*: received, not routed to that context. *Behind*: cursors"
        " short of their context's head after the drain.",
        "",
        "| run | database | connected | open at end | changes written | items expected |"
        " received | coalesced | lost | missing | duplicated | unexpected | behind | p50 / p99"
        " ms | web RSS | run s |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        " ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        fresh = "new" if r["fresh_database"] else "reused"
        if "error" in r:
            lines.append(
                f"| {r['run']} | {fresh} | failed: {r['error']} | | | | | | | | | | | | |"
                f" {r['run_s']} |"
            )
            continue
        lines.append(
            f"| {r['run']} | {fresh} | {r['connected']:,} | {r['open_at_end']:,} |"
            f" {r['changes_written']:,} | {r['items_expected']:,} | {r['items_received']:,} |"
            f" {r['coalesced']:,} | {r['lost']} | {r['missing']} | {r['duplicated']} |"
            f" {r['unexpected']} | {r['behind_after_drain']} |"
            f" {fmt_ms_whole(r['p50_ms'])} / {fmt_ms_whole(r['p99_ms'])} |"
            f" {r['web_rss_kb'] / 1024:.0f} MB |"
            f" {r['run_s']} |"
        )
    lines.append("")
    for r in runs:
        if r.get("lost_by_context"):
            lines.append(f"- run {r['run']}: lost by context {r['lost_by_context']}")
        if r.get("celery_ready_s") is None and "error" not in r:
            lines.append(f"- run {r['run']}: no Celery worker reported itself at start-up")
    lines.append("")
    return lines


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = scenario_parser(__doc__, quick="2 runs, 100 clients, 50/s")
    parser.add_argument("--runs", type=int, help=f"default {TARGET_RUNS}, quick 2")
    parser.add_argument("--clients", type=int, help="default 2000, quick 100")
    parser.add_argument("--rate", type=float, help="changes/s (default 200, quick 50)")
    parser.add_argument("--seconds", type=float, help="measured per run (default 8, quick 3)")
    parser.add_argument("--warmup", type=float, help="seconds before (default 2, quick 1)")
    parser.add_argument("--companies", type=int, help="default 100,000, quick 2,000")
    parser.add_argument(
        "--database",
        default=f"{BENCH_DB}_soak",
        help="dropped and created again on DATABASE_URL's server (default %(default)s)",
    )
    workload_arguments(parser, companies=False)
    parser.add_argument("--loadgen-timeout", type=float, default=900)
    args = parser.parse_args()
    quick = args.quick
    args.runs = args.runs or (2 if quick else TARGET_RUNS)
    args.clients = args.clients or (100 if quick else TARGET_STEP[0])
    args.rate = args.rate or (50 if quick else TARGET_STEP[1])
    args.seconds = args.seconds or (3.0 if quick else 8.0)
    args.warmup = args.warmup or (1.0 if quick else 2.0)
    args.companies = args.companies or (2_000 if quick else 100_000)

    stop_on_sigterm()
    started = time.monotonic()
    database_url, timings = fresh_database(args.database, companies=args.companies)
    print(f"fresh database {args.database}: {timings}", flush=True)
    workload = workload_of(database_url, args)
    runs = []
    with logs_directory("soak-loss") as logs:
        for index in range(1, args.runs + 1):
            run = one_run(index, database_url, workload, args, logs)
            print(run_line(run), flush=True)
            runs.append(run)
    command = " ".join(["python -m bench.soak_loss", *sys.argv[1:]])
    data = {
        "command": command,
        "processes": list(SOAK_PROCESSES),
        "runs_asked": args.runs,
        "clients": args.clients,
        "rate": args.rate,
        "warmup_s": args.warmup,
        "seconds_s": args.seconds,
        "database": {"name": args.database, "companies": args.companies, **timings},
        "runs": runs,
    }
    results_write(NAME, data, quick=args.quick, started=started)


if __name__ == "__main__":
    main()
