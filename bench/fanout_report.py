"""The fan-out section of docs/benchmarks.md, from bench/results/fanout.json (bench/fanout.py
measures), set beside the baselines' figures."""

from __future__ import annotations

import json
import statistics

from bench.baselines import sustained
from bench.common import RESULTS, verdict
from bench.fanout import STEP_DRAIN_S, STEP_P99_MS, TARGET_ALL_WITHIN_MS, TARGET_DELIVERIES
from bench.harness.tables import fmt_ms, latency_cells, mb, measured_by, table_head, table_row


def report_section(data: dict) -> list[str]:
    """This scenario's part of docs/benchmarks.md."""
    runs = [run for run in data["runs"] if "one_change" in run]
    lines = [
        "## Fan-out and deliveries per second",
        "",
        f"{measured_by(data, 'fanout')}: one web server process and `run_publisher` on"
        " the bench database; every client follows the same company context, spread over"
        " several load generator processes on the same machine. Latency is from the time"
        " stamped into the row just before the autocommitted UPDATE to the client's receipt.",
        "",
        "| figure | target | measured | |",
        "| --- | --- | --- | --- |",
    ]
    for run in runs:
        one = run["one_change"]
        ok = one["all_delivered"] and one["last_ms_max"] <= TARGET_ALL_WITHIN_MS
        lines.append(
            f"| fan-out, one change to {run['clients']:,} subscribers of one context,"
            f" {run['server']} | all delivered within 250 ms | last client after"
            f" {one['last_ms_median']:.0f} ms (median of {one['repeat']}), worst"
            f" {one['last_ms_max']:.0f} ms; first {one.get('first_ms_median', 0):.0f} ms, p50"
            f" {one['p50_ms_median']:.0f} ms;"
            f" {'all' if one['all_delivered'] else 'not all'} delivered | {verdict(ok)} |"
        )
    for run in runs:
        best = run["max_sustained_deliveries_per_s"]
        if best:
            measured = (
                f"{best:,} sustained ({run['clients']:,} clients,"
                f" {run['max_sustained_rate']:g} changes/s)"
            )
        else:
            first = run["steps"][0] if run["steps"] else None
            measured = "none sustained" + (
                f" (already at {first['rate']:g} change(s)/s: {first['deliveries_per_s']:,}"
                f" deliveries/s, p99 {fmt_ms(first['p99_ms'])} ms)"
                if first
                else ""
            )
        peak = max((s["deliveries_per_s"] for s in run["steps"]), default=0)
        if peak > best and best:
            measured += f"; {peak:,}/s delivered while falling behind"
        lines.append(
            f"| deliveries per second, one server process, {run['server']} | 50,000 or more |"
            f" {measured} | {verdict(best >= TARGET_DELIVERIES)} |"
        )
    lines += [
        "",
        f"A step is sustained when nothing is lost, p99 stays under {STEP_P99_MS:.0f} ms and"
        f" every client reached the head within {STEP_DRAIN_S:.0f} s of the last change"
        " (*caught up*);"
        " the steps stop at the first that is not. CPU in cores over the step (machine total"
        " 2.0).",
        "",
        *table_head(
            "server",
            "clients",
            "changes/s",
            "deliveries/s",
            "items/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "lost",
            "caught up s",
            "web RSS",
            "CPU web / loadgens / machine",
            "sustained",
            text=(0, -2, -1),
        ),
    ]

    for run in runs:
        for s in run["steps"]:
            cpu = s["cpu_cores"]
            lines.append(
                table_row(
                    run["server"],
                    f"{run['clients']:,}",
                    f"{s['rate']:g}",
                    f"{s['deliveries_per_s']:,}",
                    f"{s['items_per_s']:,}",
                    latency_cells(s, ("p50", "p99", "max")),
                    s["lost"],
                    f"{s['drain_s']:.1f}",
                    mb(s["web_rss_kb"]),
                    f"{cpu['web']} / {cpu['loadgens']} / {cpu['machine']}",
                    "yes" if s["sustained"] else "no",
                )
            )

    lines += ["", *fanout_notes(data), *baseline_notes(data), *ceiling_notes(data), ""]
    return lines


def ceiling_notes(data: dict) -> list[str]:
    """What bounds deliveries/s on this machine, from the steps' CPU: the server's CPU
    per delivery gives one process's ceiling (one core), the load generators' share of the
    same two cores gives the machine's."""
    notes = []
    for run in [run for run in data["runs"] if "one_change" in run]:
        steps = [s for s in run["steps"] if s["deliveries_per_s"]]
        if not steps:
            continue
        server_us = statistics.median(
            s["cpu_cores"]["web"] / s["deliveries_per_s"] * 1e6 for s in steps
        )
        client_us = statistics.median(
            s["cpu_cores"]["loadgens"] / s["deliveries_per_s"] * 1e6 for s in steps
        )
        cores = data["machine"]["cores"]
        notes.append(
            f"- {run['server']}: what bounds it here. The server spent {server_us:.0f} us of CPU"
            f" per delivery, so one process, given a whole core, tops out near"
            f" {1e6 / server_us:,.0f}/s; the load generators, on the same {cores} cores, spent"
            f" {client_us:.0f} us per delivery receiving, parsing and checking each frame, so"
            f" the machine runs out at about {cores * 1e6 / (server_us + client_us):,.0f}/s"
            f" whatever the server does. 50,000/s from one process needs at most"
            f" {1e6 / TARGET_DELIVERIES:.0f} us per delivery and the clients on other cores;"
            " on this stack that means a second server process (the hub design scales out"
            " behind a load balancer: each process receives each frame once) or a lighter"
            " send path per connection."
        )
    return notes


def baseline_notes(data: dict) -> list[str]:
    """The product's deliveries/s and CPU per delivery as ratios to the baselines
    (bench/baselines.py) measured in the same `make bench`."""
    path = RESULTS / "baselines.json"
    if not path.exists():
        return []
    base = json.loads(path.read_text())
    clients = base.get("clients")
    cpu = {
        name: statistics.median(
            s["server_us_per_delivery"] for s in run["steps"] if s["server_us_per_delivery"]
        )
        for name, run in base.get("servers", {}).items()
        if any(s["server_us_per_delivery"] for s in run["steps"])
    }
    notes = []
    for run in [run for run in data["runs"] if "one_change" in run]:
        best = run["max_sustained_deliveries_per_s"]
        per = [
            s["cpu_cores"]["web"] / s["deliveries_per_s"] * 1e6
            for s in run["steps"]
            if s["deliveries_per_s"]
        ]
        parts = []
        for name, label in (
            ("channels", "a plain Channels consumer per connection"),
            ("websockets", "a bare `websockets` broadcast"),
        ):
            rate = sustained(base, name)
            if rate and best:
                parts.append(f"{best / rate:.2f}x the deliveries/s of {label} ({rate:,.0f}/s)")
            if per and name in cpu:
                parts.append(
                    f"{statistics.median(per) / cpu[name]:.1f}x its server CPU per delivery"
                    f" ({statistics.median(per):.0f} against {cpu[name]:.0f} us)"
                )
        if parts:
            notes.append(
                f"- {run['server']} against the baselines ({clients:,} clients there,"
                f" {run['clients']:,} here): " + "; ".join(parts) + "."
            )
    return notes


def fanout_notes(data: dict) -> list[str]:
    notes = []
    for run in [run for run in data["runs"] if "one_change" in run]:
        one = run["one_change"]
        spread = statistics.median(c["last_ms"] - c["p50_ms"] for c in one["changes"])
        steps = run["steps"]
        busiest = max(steps, key=lambda s: s["cpu_cores"]["loadgen_max"], default=None)
        line = (
            f"- {run['server']}: {run['clients']:,} clients in {run['loadgens']} load generators"
            f" (connected in {run['connect_s']:.0f} s). One change: half the clients had it"
            f" after {one['p50_ms_median']:.0f} ms and the last {spread:.0f} ms later (median"
            " over the repetitions)."
        )
        if busiest:
            web_us = [
                s["cpu_cores"]["web"] / s["deliveries_per_s"] * 1e6
                for s in steps
                if s["deliveries_per_s"]
            ]
            if web_us:
                line += (
                    f" Server CPU per delivery (all its CPU over the deliveries)"
                    f" {min(web_us):.0f} to {max(web_us):.0f} us over the steps;"
                )
            line += (
                f" the busiest load generator used"
                f" {busiest['cpu_cores']['loadgen_max']}"
                f" of a core, its event loop at worst p99"
                f" {busiest['loadgen_loop_lag_ms']['p99']:.0f} ms late."
            )
        gc = one.get("web_gc")
        if gc and gc["full_collections"]:
            line += (
                f" Meanwhile the server made {gc['full_collections']} full garbage"
                f" collection(s), up to {gc['full_max_ms']:.0f} ms each (`--gc-trace`)."
            )
        notes.append(line)
    others = max(
        (s["cpu_cores"].get("others", 0) for run in data["runs"] for s in run.get("steps", [])),
        default=0,
    )
    if others >= 0.2:
        notes.append(
            f"- Other work ran on the machine meanwhile: up to {others} cores outside the stack"
            " and the load generators in one step."
        )
    for run in data["runs"]:
        if "step_error" in run:
            error = run["step_error"]
            notes.append(
                f"- {run['server']}: the step at {error['rate']:g} changes/s failed"
                f" ({error['error']})."
            )
    for error in data.get("errors", []):
        notes.append(f"- {error['server']}: the run failed ({error['error']}).")
    notes += data.get("notes", [])
    return notes
