"""The plots of docs/benchmarks.md: growth (latency and memory from 1,000 to 5,000 clients)
and the churn soak (web RSS and connection counts per period)."""

from __future__ import annotations

import json

from bench.common import REPO, RESULTS

PLOT = REPO / "docs" / "benchmarks-growth.png"
CHURN_PLOT = REPO / "docs" / "benchmarks-churn.png"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    return plt


def _labelled(axes, *, x: str, y: str, title: str) -> None:
    """Name a plot's axes and title it, with a small legend."""
    axes.set_xlabel(x)
    axes.set_ylabel(y)
    axes.set_title(title)
    axes.legend(fontsize=7)


def main() -> None:
    growth_plot()
    churn_plot()


def growth_plot() -> None:
    latency, memory = _load("latency"), _load("memory")
    if not latency and not memory:
        print("no latency or memory results: no growth plot")
        return
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    if latency:
        cells = [c for c in latency["cells"] if c.get("server") == "uvicorn"]
        for rate in sorted({c["rate"] for c in cells}):
            row = sorted((c for c in cells if c["rate"] == rate), key=lambda c: c["clients"])
            clients = [c["clients"] for c in row]
            left.plot(clients, [c["p50_ms"] for c in row], marker="o", label=f"p50, {rate}/s")
            left.plot(
                clients,
                [c["p99_ms"] for c in row],
                marker="x",
                linestyle="--",
                label=f"p99, {rate}/s",
            )
        left.axhline(150, color="grey", linewidth=0.8)
        _labelled(
            left,
            x="WebSocket clients (one uvicorn process)",
            y="commit to client, ms",
            title="Latency",
        )
    if memory:
        for transport in ("ws", "sse"):
            steps = memory.get(transport, {}).get("steps", [])
            if steps:
                right.plot(
                    [s["connections"] for s in steps],
                    [s["VmRSS"] / 1024 for s in steps],
                    marker="o",
                    label="WebSocket" if transport == "ws" else "SSE",
                )
        _labelled(right, x="idle connections", y="uvicorn RSS, MB", title="Memory")
    figure.tight_layout()
    figure.savefig(PLOT, dpi=110)
    print(f"wrote {PLOT}")


def churn_plot() -> None:
    churn = _load("soak_churn")
    if not churn or not churn.get("points"):
        print("no churn soak results: no churn plot")
        return
    plt = _pyplot()
    points = churn["points"]
    minutes = [p["minute"] for p in points]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(minutes, [p["rss_kb"] / 1024 for p in points], marker="o", label="web RSS")
    warm = [
        p
        for p in points
        if p["minute"] > 0 and p["t_s"] >= churn["warmup_minutes"] * churn["period_s"]
    ]
    slope = churn.get("summary", {}).get("rss_slope_mb_per_hour")
    if len(warm) >= 2 and slope is not None:
        # The fitted line through the warm points' mean, at the reported slope.
        mean_t = sum(p["t_s"] for p in warm) / len(warm)
        mean_mb = sum(p["rss_kb"] for p in warm) / len(warm) / 1024
        ends = (warm[0], warm[-1])
        left.plot(
            [p["minute"] for p in ends],
            [mean_mb + slope * (p["t_s"] - mean_t) / 3600 for p in ends],
            linestyle="--",
            color="grey",
            label=f"fit after warm-up: {slope:+.2f} MB/h",
        )
    _labelled(
        left,
        x=f"period ({churn['period_s']:.0f} s each)",
        y="web process RSS, MB",
        title=f"Memory, {churn['share']:.0%} of {churn['clients']:,} clients churning",
    )
    series = (
        ("sockets", "open sockets", "o"),
        ("sessions", "sessions (/metrics)", "x"),
        ("hub_members", "hub members", "^"),
        ("rows", "active_connections rows", "s"),
    )
    for key, label, marker in series:
        values = [p.get(key) for p in points]
        if any(v is not None for v in values):
            right.plot(minutes, values, marker=marker, label=label, linestyle="-", alpha=0.8)
    right.axhline(churn["clients"], color="grey", linewidth=0.8, label="clients")
    right.yaxis.get_major_locator().set_params(integer=True)
    _labelled(
        right,
        x=f"period ({churn['period_s']:.0f} s each)",
        y="count, web process",
        title="Connections as each side counts them",
    )
    figure.tight_layout()
    figure.savefig(CHURN_PLOT, dpi=110)
    print(f"wrote {CHURN_PLOT}")


if __name__ == "__main__":
    main()
