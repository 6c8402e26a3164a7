"""Write docs/benchmarks.md from the figures in bench/results/*.json."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

from bench.common import REPO, RESULTS

# Each scenario module writes bench/results/<name>.json and renders its own section.
SCENARIOS = (
    "latency",
    "scale_out",
    "snapshots",
    "slow_readers",
    "transports",
    "fanout",
    "baselines",
    "trigger_cost",
    "catchup",
    "memory",
    "bandwidth",
    "soak_loss",
    "soak_churn",
)


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _section_module(name: str) -> ModuleType:
    """The module that renders a scenario's section: `bench.<name>_report` where the
    scenario's report has a module of its own, else the scenario's."""
    report = f"bench.{name}_report"
    return importlib.import_module(report if importlib.util.find_spec(report) else f"bench.{name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    lines = [
        "# Benchmarks",
        "",
        "Every figure here was produced by a script in `bench/` on the machine named with it;"
        " the raw numbers are in `bench/results/`. Regenerate this page with"
        " `python -m bench.report`.",
        "",
    ]
    for name in SCENARIOS:
        data = _load(name)
        if data:
            lines += _section_module(name).report_section(data)
    if (REPO / "docs" / "benchmarks-growth.png").exists():
        lines += [
            "## Growth",
            "",
            "Latency and memory of one web server process (uvicorn, the product's) as clients grow"
            " (`python -m bench.plot`, from the latency and memory results above).",
            "",
            "![latency and memory growth](benchmarks-growth.png)",
            "",
        ]
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
