"""The memory section of docs/benchmarks.md, from bench/results/memory.json (bench/memory.py
measures)."""

from __future__ import annotations

from bench.common import verdict
from bench.harness.tables import measured_on
from bench.loadclients import OPENING_CONCURRENCY as OPENING
from bench.memory import CONTEXT_COMPANIES, TARGET_KB


def report_section(data: dict) -> list[str]:
    """This scenario's part of docs/benchmarks.md."""
    lines = [
        "## Memory per idle connection",
        "",
        f"{measured_on(data)}"
        f" (`python -m bench.memory{' --quick' if data['quick'] else ''}`; one uvicorn process"
        " per transport, started fresh; two client processes open idle connections in steps"
        f" of {', '.join(f'{s:,}' for s in data['steps'])}, each subscribed to one of"
        f" {CONTEXT_COMPANIES} company contexts; the server's VmRSS after it settled and a"
        " full garbage collection; 1-minute load average"
        f" {data.get('load_average_before', [0])[0]:.2f} at the start).",
        "",
        "| figure | target | measured | |",
        "| --- | --- | --- | --- |",
    ]
    names = {"ws": "WebSocket", "sse": "SSE stream"}
    for transport, name in names.items():
        run = data.get(transport)
        if not run:
            continue
        lines.append(
            f"| uvicorn process, no connection ({name} run) | | "
            f"{run['base_rss_kb'] / 1024:.0f} MB | |"
        )
        for index, slope in enumerate(run["slopes"]):
            last = index == len(run["slopes"]) - 1
            target = f"under {TARGET_KB:.0f} KB" if transport == "ws" and last else ""
            mark = verdict(slope["rss_kb_per_connection"] < TARGET_KB) if target else ""
            anon = slope["anon_kb_per_connection"]
            # Anonymous memory differs from RSS only if mapped files grew (new code paged in).
            anon_note = (
                f" ({anon:.1f} KB anonymous)"
                if abs(anon - slope["rss_kb_per_connection"]) >= 0.5
                else ""
            )
            lines.append(
                f"| memory per idle {name} connection, {slope['from']:,} to {slope['to']:,}"
                f" connections | {target} | {slope['rss_kb_per_connection']:.1f} KB{anon_note}"
                f" | {mark} |"
            )
        top = run["steps"][-1]
        previous = run["steps"][-2] if len(run["steps"]) > 1 else None
        if previous and top["open_s"] > 0:
            added = top["connections"] - previous["connections"]
            lines.append(
                f"| opening {added:,} {name} connections (handshake, hello, subscribe), two"
                f" clients, {OPENING} in flight each | | {top['open_s']:.0f} s"
                f" ({added / top['open_s']:,.0f} per second) | |"
            )
        if top.get("failed"):
            lines.append(
                f"| {name} connections that failed to open | none | {top['failed']} |"
                f" {verdict(False)} |"
            )
    lines += [
        "",
        "The first step also pays one-time costs (the hub's group memberships for the 100"
        " contexts, thread pool, lazily imported code), so the verdict is on the last step."
        " Each idle connection still gets a heartbeat every 20 to 25 s (WebSocket) or 12 to"
        " 15 s (SSE), each read from the database.",
        "",
    ]
    return lines
