"""The growth plot of docs/benchmarks.md: latency and memory from 1,000 to 5,000 clients."""

from __future__ import annotations

import json

from bench.common import REPO, RESULTS

PLOT = REPO / "docs" / "benchmarks-growth.png"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    latency, memory = _load("latency"), _load("memory")
    if not latency and not memory:
        print("no latency or memory results: no plot")
        return
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

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
        left.set_xlabel("WebSocket clients (one uvicorn process)")
        left.set_ylabel("commit to client, ms")
        left.set_title("Latency")
        left.legend(fontsize=7)
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
        right.set_xlabel("idle connections")
        right.set_ylabel("uvicorn RSS, MB")
        right.set_title("Memory")
        right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(PLOT, dpi=110)
    print(f"wrote {PLOT}")


if __name__ == "__main__":
    main()
