"""The baselines' section of docs/benchmarks.md, from bench/results/baselines.json
(bench/baselines.py measures)."""

from __future__ import annotations

from bench.baselines import REFERENCE, STEP_P99_MS, sustained
from bench.harness.tables import fmt_ms, latency_cells, mb, measured_on, table_head, table_row


def _range(pair: tuple) -> str:
    return f"{pair[0]:,} to {pair[1]:,}"


def _step_at(run: dict, deliveries: int) -> dict | None:
    return next((s for s in run["steps"] if s["deliveries_target"] == deliveries), None)


def _p99_at(step: dict | None, deliveries: int) -> str:
    return f"{fmt_ms(step['p99_ms'])} ms at {deliveries:,}/s" if step else "-"


def report_section(data: dict) -> list[str]:
    """This scenario's part of docs/benchmarks.md."""
    quick = data["mode"] == "quick"
    lines = [
        "## Baselines: a plain Channels consumer and a bare websockets broadcast",
        "",
        f"{measured_on(data)}"
        f" (`python -m bench.baselines{' --quick' if quick else ''}`,"
        f" {data['duration_s']:.0f} s; load average {data['load_average'][0]:.2f} before)."
        f" No database: {data['clients']:,} WebSocket clients in {data['client_processes']}"
        " processes on the same cores, one server process, pre-encoded 172-byte frames"
        " published at a fixed rate through Redis on loopback (`group_send` on"
        " `RedisPubSubChannelLayer` for the consumer, `PUBLISH` for the broadcast);"
        " latency from the publisher's stamp to the client's receipt. A step passes when"
        f" every frame reaches every client, p99 is at most {STEP_P99_MS / 1000:g} s and the"
        " publisher holds its rate; the steps stop at the first that fails. *Missing*: frames"
        f" of the measured window not at a client {data['wait_s']:g} s after the last was"
        " published."
        " CPU is in cores (1.0 = one core busy), read from /proc from the window's first frame"
        " until every client had its last (or the wait ended); *others* is the rest of the"
        " machine's (Redis, the system, other work); per delivery it is the server's CPU"
        " over the frames delivered in the window.",
        "",
        "| baseline | sustained deliveries/s | issue #5 reference | p99 at the reference"
        " point | reference p99 | server CPU per delivery | server RSS |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, run in data["servers"].items():
        ref = REFERENCE[kind]
        best = sustained(data, kind)
        at = _step_at(run, ref["p99_at"])
        per = [s["server_us_per_delivery"] for s in run["steps"] if s["server_us_per_delivery"]]
        lines.append(
            f"| {run['label']} | {f'{best:,.0f}' if best else 'none'} |"
            f" {_range(ref['deliveries_per_s'])} |"
            f" {_p99_at(at, ref['p99_at'])} |"
            f" {ref['p99_ms'][0]:g} to {ref['p99_ms'][1]:g} ms |"
            f" {f'{min(per):.0f} to {max(per):.0f} us' if per else '-'} |"
            f" {run.get('rss_connected_kb', 0) / 1024:.0f} MB with the clients connected |"
        )
    for run in data["servers"].values():
        lines += [
            "",
            f"{run['label']}, {run['clients']:,} clients ({run.get('stopped', 'stopped')}):",
            "",
            *table_head(
                "deliveries/s asked",
                "frames/s",
                "delivered/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "missing",
                "publisher late ms",
                "CPU server / clients (busiest) / others / machine",
                "server us per delivery",
                "client loop lag p99 ms",
                "server RSS",
                "passed",
                text=(8, -1),
            ),
        ]
        for s in run["steps"]:
            cpu = s["cpu_cores"]
            lines.append(
                table_row(
                    f"{s['deliveries_target']:,}",
                    f"{s['frames_per_s']:g}",
                    f"{s['deliveries_per_s']:,}",
                    latency_cells(s, ("p50", "p99", "max")),
                    s["missing"],
                    f"{s['publisher']['late_end_ms']:.0f}",
                    f"{cpu['server']} / {cpu['clients']} ({cpu['client_max']}) / {cpu['others']}"
                    f" / {cpu['machine']}",
                    s["server_us_per_delivery"],
                    fmt_ms(s["client_loop_lag_ms"]["p99"]),
                    mb(s["server_rss_kb"]),
                    "yes" if s["passed"] else "no",
                )
            )

    lines += ["", *baseline_notes(data), ""]
    return lines


def baseline_notes(data: dict) -> list[str]:
    notes = []
    if data["mode"] == "quick":
        notes.append(
            f"- Quick run: {data['clients']:,} clients, not the reference's 2,000; the"
            " figures are for development, not for comparison with the issue's."
        )
    for run in data["servers"].values():
        steps = run["steps"]
        if "error" in run:
            notes.append(f"- {run['label']}: the run failed ({run['error']}).")
        if not steps:
            continue
        busiest = max(steps, key=lambda s: s["cpu_cores"]["client_max"])
        lag = max((s["client_loop_lag_ms"]["p99"] or 0) for s in steps)
        last = steps[-1]
        line = (
            f"- {run['label']}: the busiest client process used"
            f" {busiest['cpu_cores']['client_max']} of a core, and no client event loop was"
            f" more than {lag:.0f} ms late at p99 in any step."
        )
        if not last["passed"]:
            line += (
                f" At the failing step ({last['deliveries_target']:,}/s) the server used"
                f" {last['cpu_cores']['server']} cores and the machine"
                f" {last['cpu_cores']['machine']} of {data['machine']['cores']}"
                f" ({last['cpu_cores']['others']} outside the server, clients and publisher):"
                f" bound by {BOUND_TEXT[last['bound']]}."
            )
        notes.append(line)
    others = max(
        (s["cpu_cores"]["others"] for run in data["servers"].values() for s in run["steps"]),
        default=0.0,
    )
    if others >= 0.2:
        notes.append(
            f"- Other work used up to {others} cores during a step (Redis, the system, or"
            " other processes on the machine): the figures may be low."
        )
    return notes


BOUND_TEXT = {
    "server": "the server (near a full core: it is one process)",
    "machine": "the machine (both cores busy, the clients' share included)",
    "clients": "the clients (a client process at a full core or its event loop late)",
    "none": "nothing at its limit (latency without a saturated process)",
}
