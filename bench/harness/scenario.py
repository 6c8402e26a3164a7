"""What the load generator scenarios share around their measurements: the command line's
common options, the workload from them, the working directory of logs and plans, the
teardown of a stack and the writing of the results."""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import result_write
from bench.harness.cell import measure
from bench.harness.fleet import Fleet
from bench.harness.stack import PRODUCT_SERVER, Stack, uvicorn_missing
from bench.harness.writer import PLAN_SHARES, Workload, Writer, record_pool

# The DESIGN mix of the writer: 10% of changes significant (so the overview gets them
# too), half of them on the records of the companies clients follow.
MAJOR_SHARE = 0.1
FOLLOWED_SHARE = 0.5


def scenario_parser(doc: str, *, quick: str) -> argparse.ArgumentParser:
    """A scenario's command line: the first paragraph of its docstring as the description,
    and `--quick` (smaller, for development) doing what `quick` says."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=quick)
    return parser


def ints(text: str) -> list[int]:
    """A comma list of whole numbers (`--clients 1000,2000`)."""
    return [int(v) for v in text.split(",") if v]


def floats(text: str) -> list[float]:
    """A comma list of numbers (`--rates 1,2.5`)."""
    return [float(v) for v in text.split(",") if v]


def workload_arguments(parser: argparse.ArgumentParser, *, companies: bool = True) -> None:
    """The writer's mix and seed, and (with `companies`) the bench database's size."""
    if companies:
        parser.add_argument("--companies", type=int, default=100_000)
    parser.add_argument("--major-share", type=float, default=MAJOR_SHARE)
    parser.add_argument("--followed-share", type=float, default=FOLLOWED_SHARE)
    parser.add_argument("--seed", type=int, default=7)


def workload_of(database_url: str, args: argparse.Namespace) -> Workload:
    """The workload of `workload_arguments` on the records of `database_url`."""
    return Workload(
        record_pool(database_url, args.seed),
        seed=args.seed,
        major_share=args.major_share,
        followed_share=args.followed_share,
    )


def workload_figures(args: argparse.Namespace, cells: list[dict]) -> dict:
    """What the results say of the writer: the median time of its statements (part of
    every latency) and the mix of `workload_arguments`."""
    statements = [c["writer"]["statement_p50_ms"] for c in cells]
    return {
        "statement_p50_ms": round(statistics.median(statements), 2) if statements else None,
        "mix": {
            **PLAN_SHARES,
            "major_share": args.major_share,
            "followed_share": args.followed_share,
        },
    }


def uvicorn_required(servers: Iterable[str] = (PRODUCT_SERVER,)) -> None:
    """Stop here, saying what to install, when a server to measure is uvicorn and it is
    missing."""
    if "uvicorn" in servers and uvicorn_missing():
        sys.exit("uvicorn is not installed: pip install 'uvicorn[standard]>=0.30,<1'")


@contextlib.contextmanager
def logs_directory(name: str) -> Iterator[Path]:
    """Where a run's logs and plans go: BENCH_LOG_DIR when set (kept afterwards), else a
    temporary directory."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        path = Path(os.environ.get("BENCH_LOG_DIR") or tmp)
        path.mkdir(parents=True, exist_ok=True)
        yield path


@dataclass
class Rig:
    """What a scenario's cells run on: the stack, its load generators, the writer, the
    workload that picks the changes and the scenario's options (--warmup, --seconds, and
    --rate or --rates)."""

    stack: Stack
    fleet: Fleet
    writer: Writer
    workload: Workload
    args: argparse.Namespace

    def measure(self, *, label: str, rate: float | None = None, **options) -> dict:
        """One cell at `rate` (default --rate); `options` go to `measure`."""
        return measure(
            self.stack,
            self.fleet,
            self.writer,
            rate=self.args.rate if rate is None else rate,
            warmup=self.args.warmup,
            seconds=self.args.seconds,
            pick=self.workload.pick,
            label=label,
            **options,
        )

    def at_rates(self, *, label: str, **options) -> Iterator[dict]:
        """One cell at each rate of --rates on the same clients, labelled
        `<label>-<rate>`, with how long it took and how many load generators listened."""
        for rate in self.args.rates:
            started = time.monotonic()
            cell = self.measure(label=f"{label}-{rate}", rate=rate, **options)
            cell.update(
                loadgens=len(self.fleet.processes), cell_s=round(time.monotonic() - started, 1)
            )
            yield cell


def stack_teardown(writer: Writer | None, stack: Stack, *fleets: Fleet | None) -> None:
    """Close the writer, then stop the server before the load generators: it closes every
    connection with 4503 at once, which is much quicker than thousands of clients closing
    one by one."""
    if writer is not None:
        writer.close()
    stack.stop()
    for fleet in fleets:
        if fleet is not None:
            fleet.stop()


def results_write(name: str, data: dict, *, quick: bool, started: float) -> Path:
    """Store a scenario's figures with its mode (`--quick` or full) and how long it ran,
    and say where they went."""
    data = {"mode": "quick" if quick else "full", **data}
    data["duration_s"] = round(time.monotonic() - started, 1)
    path = result_write(name, data)
    print(f"wrote {path} in {data['duration_s']:.0f} s")
    return path
