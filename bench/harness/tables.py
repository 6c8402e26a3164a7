"""How the report sections print figures: the cells of docs/benchmarks.md's tables and
the notes every load generator scenario adds."""

from __future__ import annotations

from collections.abc import Callable


def fmt_ms(value: float | None) -> str:
    """Milliseconds as the reports print them."""
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def fmt_ms_whole(value: float | None) -> str:
    """Milliseconds to the whole ms (the soaks' tables)."""
    return "-" if value is None else f"{value:.0f}"


def fmt_count(value: int | None) -> str:
    """A count with thousands separators, `-` where it was not read."""
    return "-" if value is None else f"{value:,}"


def measured_on(data: dict) -> str:
    """Where and when a section's figures were taken (bench.common.machine)."""
    m = data["machine"]
    return f"Measured {m['date']} on {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}"


def measured_by(data: dict, module: str) -> str:
    """The opening of a section: where, when and by which command its figures were taken."""
    return (
        f"{measured_on(data)} (`python -m bench.{module}"
        f"{' --quick' if data['mode'] == 'quick' else ''}`, {data['duration_s'] / 60:.1f} min)"
    )


def table_head(*columns: str, text: tuple[int, ...] = (0, -1)) -> list[str]:
    """A table's header row and its rule: the columns at the indexes of `text` are
    aligned left, the figures right."""
    left = {i % len(columns) for i in text}
    rule = ["---" if i in left else "---:" for i in range(len(columns))]
    return [f"| {' | '.join(columns)} |", f"| {' | '.join(rule)} |"]


def table_row(*cells: object) -> str:
    """One row of a table, its cells as given."""
    return f"| {' | '.join(str(cell) for cell in cells)} |"


def mb(kb: int) -> str:
    """A size in kB (as /proc gives it) in whole MB."""
    return f"{kb / 1024:.0f} MB"


def latency_cells(c: dict, columns: tuple[str, ...] = ("p50", "p95", "p99", "max")) -> str:
    """A cell's latency columns (`p50_ms` and the like), ` | ` between them."""
    return " | ".join(fmt_ms(c[f"{column}_ms"]) for column in columns)


def published_cell(c: dict) -> str:
    """A cell's stamp to the publisher's `processed_at`, p50 / p99."""
    st = c.get("stages") or {}
    return f"{fmt_ms(st.get('to_published_p50_ms'))} / {fmt_ms(st.get('to_published_p99_ms'))}"


def cpu_cell(cpu: dict) -> str:
    """A cell's CPU column: web / publisher / loadgens (max one) / postgres / others /
    machine, in cores."""
    return (
        f"{cpu['web']} / {cpu['publisher']} / {cpu['loadgens']} ({cpu['loadgen_max']}) /"
        f" {cpu['postgres']} / {cpu.get('others', '-')} / {cpu['machine']}"
    )


def by_kind_text(cell: dict) -> str:
    """A cell's latency by context kind, as one phrase."""
    return ", ".join(
        f"{kind} p50 {fmt_ms(k['p50_ms'])} / p99 {fmt_ms(k['p99_ms'])} ms"
        for kind, k in cell["by_kind"].items()
    )


def loadgen_note(cells: list[dict], name: Callable[[dict], str]) -> str:
    """The note that the load generators were not the bottleneck: the busiest one's CPU
    and the worst lateness of their event loops (`name` says which run a cell is of)."""
    busiest = max(cells, key=lambda c: c["cpu_cores"]["loadgen_max"])
    lag = max(cells, key=lambda c: c["loadgen_loop_lag_ms"]["p99"] or 0)
    return (
        "- The load generators were checked against being the bottleneck: the busiest one"
        f" used {busiest['cpu_cores']['loadgen_max']} of a core"
        f" ({name(busiest)}, {busiest['clients']:,} clients, {busiest['rate']}/s), and"
        " each samples how late its event loop runs a 5 ms tick: at worst p99"
        f" {lag['loadgen_loop_lag_ms']['p99']:.0f} ms, max"
        f" {lag['loadgen_loop_lag_ms']['max']:.0f} ms ({name(lag)},"
        f" {lag['clients']:,} clients, {lag['rate']}/s). Those delays are part of the"
        " measured latency"
    )


# The columns every load generator cell shows (bench/latency.py, bench/transports.py),
# from the client count to the drain, and the CPU column.
CELL_COLUMNS = (
    "clients",
    "changes/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "to published p50 / p99 ms",
    "deliveries/s",
    "items/s",
    "items delivered",
    "lost",
    "dup",
    "gaps",
    "caught up s",
)
CPU_HEADER = "CPU web / publisher / loadgens (max one) / postgres / others / machine"


def cell_columns(c: dict, *, gaps: str | None = None) -> str:
    """A cell's columns of CELL_COLUMNS, ` | ` between
    (`gaps` in place of the count where
       a transport has none to see)."""
    return (
        f"{c['clients']:,} | {c['rate']} | {latency_cells(c)} | {published_cell(c)} |"
        f" {c['deliveries_per_s']:,} | {c['items_per_s']:,} | {c['items_received']:,} |"
        f" {c['lost']} | {c['duplicates']} | {c['gaps'] if gaps is None else gaps} |"
        f" {c['drain_s']}"
    )
