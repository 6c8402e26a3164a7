"""Churn soak: 2,000 WebSocket clients for 20 minutes, 10% of them vanishing and coming
back every minute, at 50 changes/s, on the whole `make run` process set.

The Procfile's web, publisher, Celery worker and beat run on the bench database
(bench/soak.py); the clients (bench/loadgen.py, the 60/30/10 mix of bench/harness/writer.py's
Workload) connect, and latency's stamped writer commits at the rate for the whole soak. At the start
of every minute each load generator aborts 10% of its clients at once: SO_LINGER 0 and
close, so the server sees a TCP reset and never a close frame, as when a network drops.
Each reconnects at once and resubscribes from its cursors (`since`).

Once a minute (three quarters into it, when the reconnections are long done) the web
process is measured: its RSS (/proc/<pid>/status), its open sockets (ESTABLISHED on its
port), its sessions as it counts them on `/metrics` (`carbon_realtime_process_connections`,
and its hub's subscriptions, `carbon_realtime_hub_members`) and its `active_connections`
rows. Then every client must have every change of its contexts up to the head read at
that moment, and the load generators check what they
received against the change log since the last minute (lost, missing, duplicated as in
bench/soak_loss.py). RSS growth is the least-squares slope of the minutes after the
warm-up, per hour.

    python -m bench.soak_churn             # 2,000 clients, 20 x 60 s, 50/s, warm-up 5 min
    python -m bench.soak_churn --quick     # 100 clients, 3 x 5 s, 50/s
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from pathlib import Path

from bench.common import REPO, bench_database_ready, verdict
from bench.harness.cell import reports_merge
from bench.harness.fleet import Fleet
from bench.harness.processes import stop_on_sigterm
from bench.harness.scenario import (
    logs_directory,
    results_write,
    scenario_parser,
    stack_teardown,
    workload_arguments,
    workload_of,
)
from bench.harness.stack import active_connections_tidy, vacuum_churned
from bench.harness.tables import fmt_count, measured_on
from bench.harness.writer import Workload, Writer
from bench.soak import (
    SOAK_PROCESSES,
    ProcfileStack,
    connection_rows,
    established_on_port,
    loss_figures,
    metrics_read,
    port_clients,
    slope_per_hour,
)

NAME = "soak_churn"
TARGET_RSS_MB_PER_HOUR = 5.0
TARGET = {"clients": 2000, "minutes": 20, "period_s": 60.0, "share": 0.1, "rate": 50.0}
# When, into each minute, the web process is measured: the reconnections of the minute's
# churn are over (they take a few seconds at 200 clients), the next has not begun.
SAMPLE_AT = 0.75


class WriterStopped(Exception):
    """Raised by the writer's pick when the soak ends early."""


def sample(stack: ProcfileStack, database_url: str) -> dict:
    """The web process now: RSS, sockets, sessions by its own count, its rows."""
    out: dict = {
        "rss_kb": stack.rss_kb(),
        "sockets": established_on_port(stack.port, stack.pid("web")),
    }
    try:
        metrics = metrics_read(stack.port)
    except (OSError, ValueError) as exc:
        metrics, out["metrics_error"] = {}, repr(exc)
    out["sessions"] = metrics.get("carbon_realtime_process_connections", {}).get("total")
    out["hub_members"] = metrics.get("carbon_realtime_hub_members", {}).get("total")
    out["rows"], out["rows_all"] = connection_rows(database_url, stack.server_name())
    # The socket count once more: a connection that came or went meanwhile shows.
    out["sockets_after"] = established_on_port(stack.port, stack.pid("web"))
    if len({out["sockets"], out["sockets_after"], out["sessions"], out["rows"]}) > 1:
        out["clients_by_process"] = port_clients(stack.port)
    return out


def consistent(point: dict) -> bool:
    """Sessions (each count the server has) = open sockets = its rows."""
    counts = [point["sockets"], point["sockets_after"], point["sessions"], point["rows"]]
    return None not in counts and len(set(counts)) == 1


def loss_window(fleet: Fleet, stack: ProcfileStack, window: dict, drain_s: float) -> dict:
    """Every client at its contexts' changes up to seq_hi, then the loss check."""
    drained = fleet.drain(drain_s, window["seq_hi"])
    merged = reports_merge(fleet.report(window))
    return {
        "drain_s": drained["s"],
        "behind": drained["behind"],
        "open": merged["open"],
        "closed_by_server": merged["closed_by_server"],
        **loss_figures(merged),
    }


def soak(args, database_url: str, workload: Workload, workdir: Path) -> dict:
    """Start, connect, churn and measure every period, stop; the figures."""
    active_connections_tidy(database_url)
    if not args.quick:  # a few seconds on the 100,000-company database: not for --quick
        vacuum_churned(database_url)
    stack = ProcfileStack(database_url, workdir)
    fleet = Fleet(stack.ws_url, database_url, workdir, timeout=args.loadgen_timeout)
    writer = None
    thread = None
    stop = threading.Event()
    points: list[dict] = []
    out: dict = {"points": points}
    try:
        stack.start()
        out["celery_ready_s"] = stack.celery_ready_s
        ready = fleet.connect(workload.plan(args.clients))
        out["connected"], out["connect_s"] = ready["connected"], ready["connect_s"]
        print(f"{ready['connected']}/{args.clients} connected in {ready['connect_s']} s")
        writer = Writer(database_url)
        stats: dict = {}

        def pick():
            if stop.is_set():
                raise WriterStopped
            return workload.pick()

        def write() -> None:
            with contextlib.suppress(WriterStopped):
                writer.run(args.rate, args.minutes * args.period, pick, stats)

        # The first window starts at each client's subscription (0: see loadgen's report).
        seq_lo, from_ns = 0, time.time_ns()
        t0 = time.monotonic()
        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        points.append({"minute": 0, "t_s": 0.0, **sample(stack, database_url)})
        for minute in range(1, args.minutes + 1):
            start = t0 + (minute - 1) * args.period
            time.sleep(max(0.0, start - time.monotonic()))
            churn = fleet.churn(args.share, seed=args.seed + minute)
            time.sleep(max(0.0, start + args.period * SAMPLE_AT - time.monotonic()))
            at = time.monotonic() - t0
            point = {"minute": minute, "t_s": round(at, 1), **sample(stack, database_url)}
            seq_hi, to_ns = writer.head_seq(), time.time_ns()
            window = {"label": f"minute-{minute}", "from_ns": from_ns, "to_ns": to_ns}
            window.update(seq_lo=seq_lo, seq_hi=seq_hi)
            point.update(churn=churn, **loss_window(fleet, stack, window, args.drain_timeout))
            seq_lo, from_ns = seq_hi, to_ns
            points.append(point)
            print(point_line(point), flush=True)
        thread.join(args.period + 30)
        out["writer"] = stats
        # The rest of the last minute: the writer's last changes, to the very end.
        stack.publisher_idle()
        seq_hi = writer.head_seq()
        window = {"label": "end", "from_ns": from_ns, "to_ns": time.time_ns()}
        window.update(seq_lo=seq_lo, seq_hi=seq_hi)
        out["end"] = loss_window(fleet, stack, window, args.drain_timeout)
        out["end"]["seq_hi"] = seq_hi
    except Exception as exc:
        out["error"] = repr(exc)
        print(f"failed: {exc!r}", flush=True)
    finally:
        stop.set()
        if thread is not None:
            thread.join(10)
        stack_teardown(writer, stack, fleet)
    return out


def point_line(p: dict) -> str:
    c = p["churn"]
    return (
        f"minute {p['minute']:3} t={p['t_s']:7.1f} s rss={p['rss_kb'] / 1024:.1f} MB"
        f" sockets={p['sockets']}/{p['sockets_after']} sessions={p['sessions']}"
        f" hub_members={p['hub_members']}"
        f" rows={p['rows']} (all {p['rows_all']}) churn {c['aborted']} aborted,"
        f" {c['reconnected']} back, {c['failed']} failed in {c['s']} s;"
        f" items {p['items_received']}/{p['items_expected']} lost={p['lost']}"
        f" missing={p['missing']} dup={p['duplicated']} behind={p['behind']}"
    )


def summary(data: dict) -> dict:
    """The figures the targets are about, from the points."""
    points = [p for p in data["points"] if p["minute"] > 0]
    warm = [p for p in points if p["t_s"] >= data["warmup_minutes"] * data["period_s"]]
    slope_kb = slope_per_hour([(p["t_s"], p["rss_kb"]) for p in warm])
    windows = [*points, *([data["end"]] if data.get("end") else [])]
    return {
        "rss_slope_mb_per_hour": None if slope_kb is None else round(slope_kb / 1024, 2),
        "rss_points_fitted": len(warm),
        "rss_first_mb": round(data["points"][0]["rss_kb"] / 1024, 1) if data["points"] else None,
        "rss_last_mb": round(points[-1]["rss_kb"] / 1024, 1) if points else None,
        "consistent_minutes": sum(consistent(p) for p in data["points"]),
        "minutes_measured": len(data["points"]),
        "aborted": sum(p["churn"]["aborted"] for p in points),
        "reconnect_failed": sum(p["churn"]["failed"] for p in points),
        "items_received": sum(w["items_received"] for w in windows),
        **{
            key: sum(w[key] for w in windows)
            for key in ("lost", "missing", "duplicated", "unexpected", "behind")
        },
    }


# -- the report section -------------------------------------------------------------------------

PLOT = "benchmarks-churn.png"


def report_section(data: dict) -> list[str]:
    """This scenario's part of docs/benchmarks.md."""
    s = data["summary"]
    # The target soak, or a longer one.
    target = all(data[key] == TARGET[key] for key in ("clients", "period_s", "share", "rate"))
    target = target and data["minutes"] >= TARGET["minutes"]
    hours = data["minutes"] * data["period_s"] / 3600

    def row(figure: str, wanted: str, measured: str, ok: bool) -> str:
        mark = verdict(ok) if target else "smaller than the target: not judged"
        return f"| {figure} | {wanted} | {measured} | {mark} |"

    slope = s["rss_slope_mb_per_hour"]
    slope_text = (
        "too few minutes after the warm-up to fit"
        if slope is None
        else f"{slope:+.2f} MB per hour ({s['rss_points_fitted']} periods fitted; RSS"
        f" {s['rss_first_mb']} MB after connecting, {s['rss_last_mb']} MB at the end)"
    )
    lost = s["lost"] + s["missing"] + s["duplicated"]
    lines = [
        "## Churn soak",
        "",
        f"{measured_on(data)}"
        f" (`{data['command']}`, {data['duration_s'] / 60:.1f} min): the `make run` process"
        f" set ({', '.join(data['processes'])}, by their Procfile lines; DEBUG off) on the"
        f" bench database ({data['companies']:,} companies), {data['clients']:,} WebSocket"
        " clients (60/30/10) and"
        f" {data['rate']:.0f} changes/s for {data['minutes']} periods of"
        f" {data['period_s']:.0f} s. At the start of each period {data['share']:.0%} of the"
        " clients vanish at once (SO_LINGER 0 and close: a TCP reset, no close frame) and"
        " reconnect, resuming from their cursors. Three quarters into each period the web"
        " process is measured: RSS, ESTABLISHED sockets on its port, its sessions on"
        " `/metrics`, its `active_connections` rows; then every client must reach its"
        " contexts' heads as of that moment and the changes since the last period are"
        " checked against the log. RSS growth is the least-squares slope over the periods"
        f" after a {data['warmup_minutes']}-period warm-up, extrapolated to an hour"
        f" (the soak lasted {hours:.2f} h).",
        "",
        "| figure | target | measured | |",
        "| --- | --- | --- | --- |",
        row(
            "web RSS growth after warm-up, churning",
            f"under {TARGET_RSS_MB_PER_HOUR:.0f} MB per hour",
            slope_text,
            slope is not None and slope < TARGET_RSS_MB_PER_HOUR,
        ),
        row(
            "sessions = open sockets = `active_connections` rows of the process",
            "at every minute",
            f"{s['consistent_minutes']} of {s['minutes_measured']} measurements",
            s["consistent_minutes"] == s["minutes_measured"],
        ),
        row(
            "loss and order across the reconnections",
            "0 lost",
            f"{s['lost']} lost, {s['missing']} missing, {s['duplicated']} duplicated,"
            f" {s['behind']} behind, of {s['items_received']:,} items; {s['aborted']:,}"
            f" connections aborted, {s['reconnect_failed']} reconnections failed",
            lost == 0 and s["behind"] == 0 and s["reconnect_failed"] == 0,
        ),
        "",
        "Per period: *sockets* before / after the other counts were read, *sessions* the"
        " process's own count (`carbon_realtime_process_connections`), *hub members* its hub's"
        " subscriptions (`carbon_realtime_hub_members`), *rows*"
        " its `active_connections` rows (all processes' in brackets), *churn* the clients"
        " aborted / reconnected / failed and how long the reconnections took, then the loss"
        " check of the changes since the previous period.",
        "",
        "| period | s | web RSS MB | sockets | sessions | hub members |"
        " rows | churn | reconnect s | items | lost | missing | dup | behind |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        " ---: | ---: | ---: |",
    ]
    for p in data["points"]:
        churn = p.get("churn")
        lines.append(
            f"| {p['minute']} | {p['t_s']:.0f} | {p['rss_kb'] / 1024:.1f} |"
            f" {p['sockets']} / {p['sockets_after']} | {fmt_count(p['sessions'])} |"
            f" {fmt_count(p['hub_members'])} |"
            f" {p['rows']} ({p['rows_all']}) |"
            + (
                f" {churn['aborted']} / {churn['reconnected']} / {churn['failed']} |"
                f" {churn['s']:.1f} | {p['items_received']:,} | {p['lost']} | {p['missing']} |"
                f" {p['duplicated']} | {p['behind']} |"
                if churn
                else " - | - | - | - | - | - | - |"
            )
        )
    lines.append("")
    if data.get("end"):
        e = data["end"]
        lines.append(
            f"- After the last period, up to the writer's last change: {e['items_received']:,}"
            f" items, {e['lost']} lost, {e['missing']} missing, {e['duplicated']} duplicated,"
            f" {e['behind']} behind."
        )
    if data.get("error"):
        lines.append(f"- The soak failed: {data['error']}.")
    if data.get("celery_ready_s") is None:
        lines.append("- No Celery worker reported itself at start-up.")
    inconsistent = [p for p in data["points"] if not consistent(p)]
    if inconsistent:
        worst = max(inconsistent, key=lambda p: (p["sessions"] or 0) - p["sockets"])
        lines.append(
            f"- Counts disagreed in {len(inconsistent)} measurements; the widest: period"
            f" {worst['minute']}, {worst['sockets']} sockets,"
            f" {fmt_count(worst['sessions'])} sessions,"
            f" {worst['rows']} rows. Sessions or rows above the sockets are connections the"
            " server still holds for clients that are gone."
        )
    if (REPO / "docs" / PLOT).exists():
        lines += [
            "",
            "Web RSS and the three counts per period (`python -m bench.plot`, from these"
            " results); the dashed line is the fitted growth.",
            "",
            f"![churn soak: web RSS and connection counts per period]({PLOT})",
        ]
    lines.append("")
    return lines


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = scenario_parser(__doc__, quick="100 clients, 3 periods of 5 s")
    parser.add_argument("--clients", type=int, help="default 2000, quick 100")
    parser.add_argument("--minutes", type=int, help="periods (default 20, quick 3)")
    parser.add_argument("--period", type=float, help="seconds per period (default 60, quick 5)")
    parser.add_argument("--warmup-minutes", type=int, help="periods before the RSS fit (5/1)")
    parser.add_argument("--share", type=float, default=0.1, help="aborted each period")
    parser.add_argument("--rate", type=float, default=50.0, help="changes/s")
    parser.add_argument("--drain-timeout", type=float, default=20.0)
    workload_arguments(parser)
    args = parser.parse_args()
    quick = args.quick
    args.clients = args.clients or (100 if quick else TARGET["clients"])
    args.minutes = args.minutes or (3 if quick else TARGET["minutes"])
    args.period = args.period or (5.0 if quick else TARGET["period_s"])
    if args.warmup_minutes is None:
        args.warmup_minutes = 1 if quick else 5
    args.loadgen_timeout = args.minutes * args.period + 600

    stop_on_sigterm()
    started = time.monotonic()
    database_url = bench_database_ready(companies=args.companies)
    workload = workload_of(database_url, args)
    with logs_directory("soak-churn") as logs:
        outcome = soak(args, database_url, workload, logs)
    data = {
        "command": " ".join(["python -m bench.soak_churn", *sys.argv[1:]]),
        "processes": list(SOAK_PROCESSES),
        "clients": args.clients,
        "minutes": args.minutes,
        "period_s": args.period,
        "share": args.share,
        "rate": args.rate,
        "companies": args.companies,
        "warmup_minutes": args.warmup_minutes,
        "sample_at": SAMPLE_AT,
        **outcome,
    }
    data["summary"] = summary(data)
    print(f"summary: {data['summary']}")
    results_write(NAME, data, quick=args.quick, started=started)


if __name__ == "__main__":
    main()
