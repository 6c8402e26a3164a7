"""Catch-up's section of docs/benchmarks.md, from bench/results/catchup.json (bench/catchup.py
measures)."""

from __future__ import annotations

import re

from bench.catchup import TARGET_MS
from bench.common import verdict
from bench.harness.tables import measured_on

# The seq list of the data_changes fetch: a thousand numbers, shortened in the report.
_ANY_LIST = re.compile(r"'\{(\d+(?:,\d+)*)\}'")


def _any_list_short(match: re.Match) -> str:
    values = match.group(1).split(",")
    if len(values) <= 6:
        return match.group(0)
    return f"'{{{','.join(values[:3])},... {len(values) - 6:,} more ...,{','.join(values[-3:])}}}'"


def report_section(data: dict) -> list[str]:
    """This scenario's part of docs/benchmarks.md."""
    log, call, plans = data["log"], data["measured"]["call"], data["explain"]
    gc_stats = data["measured"]["gc"]
    ok = call["p95_ms"] < TARGET_MS and plans["index_only"]
    lines = [
        "## Catch-up",
        "",
        f"{measured_on(data)}"
        f" (`python -m bench.catchup{' --quick' if data['quick'] else ''}`). A published log of"
        f" {log['rows']:,} changes ({log['routes']:,} routes; data_changes"
        f" {data['sizes']['data_changes']}, change_routes {data['sizes']['change_routes']})"
        " built with SQL in its own database: emission-record updates over 100,000 companies"
        " and 30 industries, a quarter of them major (also routed to overview), and the"
        " publisher's aggregate rows per audience. Three contexts with"
        f" {data['measured']['items']:,} missed public items in total"
        f" ({', '.join(f'{c}: {n}' for c, n in data['expected'].items())});"
        f" `changes_since(..., audience='public', limit=5000)` called in-process,"
        f" {data['repeat']} warm calls; 1-minute load average"
        f" {data['load_average']['before'][0]:.2f} when they started.",
        "",
        "| figure | target | measured | |",
        "| --- | --- | --- | --- |",
        f"| catch-up of {data['measured']['items']:,} changes for 3 contexts, whole call"
        f" (p50 / p95 / max) | under {TARGET_MS:.0f} ms | {call['p50_ms']:.1f} /"
        f" {call['p95_ms']:.1f} / {call['max_ms']:.1f} ms | {verdict(ok)} |",
        f"| of which SQL round trips (p50) | | {data['measured']['sql_in_call']['p50_ms']:.1f} ms"
        f" ({len(plans['plans'])} statements) | |",
        f"| of which Python: decoding rows, building items, collecting garbage (p50) | |"
        f" {data['measured']['python_in_call_p50_ms']:.1f} ms | |",
        f"| garbage collection, average per call | | {gc_stats['per_call_ms']:.1f} ms"
        f" ({gc_stats['full_collections']} full collections in {data['repeat']} calls,"
        f" {gc_stats['full_collection_ms']:.0f} ms each over"
        f" {gc_stats['tracked_objects']:,} objects) | |",
        f"| SQL execution on the server (EXPLAIN ANALYZE, sum of the statements) | index only |"
        f" {plans['sql_execution_ms']:.1f} ms (+ {plans['sql_planning_ms']:.1f} ms planning);"
        f" {', '.join(plans['log_scans'])} | {verdict(plans['index_only'])} |",
        f"| first call after start (cache less warm) | | {data['measured']['first_call_ms']:.1f}"
        " ms | |",
        f"| same catch-up as a WebSocket subscribe reads it (one call per context, limit 500;"
        f" p50 / p95) | | {data['measured']['per_context_calls']['p50_ms']:.1f} /"
        f" {data['measured']['per_context_calls']['p95_ms']:.1f} ms | |",
        "",
        f"The log was {'built by this run' if log['built_at'] == 'this run' else 'reused'}"
        f" (a build takes {log['build_s']:.0f} s; `--rebuild` forces one). Plans of the route"
        " range reads and of the data_changes fetch (warm):",
        "",
        "```",
    ]
    for name, plan in plans["plans"].items():
        if name.startswith("route range") or name == "data_changes fetch":
            lines += [f"-- {name}", _ANY_LIST.sub(_any_list_short, plan["plan"]), ""]
    lines[-1:] = ["```", ""]
    return lines
