"""Run the benchmark scenarios, then write docs/benchmarks.md (`make bench`).

Every scenario is its own process (`python -m bench.<name>`), so one that fails or runs
out of time does not take the others with it; each is bounded by a timeout and all
traffic stays on loopback.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.common import REPO

# (scenario, seconds it may take in full mode, in quick mode). The full run took 16 minutes
# on two cores with the one-time build of catchup's 10,000,000-change log (3 of them) and
# before memory and baselines had the budgets below: 15 to 18 minutes, over the 15 the
# issue asks for. The two soaks add about 30 (estimated from small runs: 8 for the loss
# soak, 22 for the churn soak) and about one in --quick; slow_readers about 4 more (six
# phases of 32 s, the slow readers' connects and the start-up; quick: under a minute).
SCENARIOS = (
    # Quick: 56 s measured on a quiet machine (2026-12-07), more when its database is new.
    ("trigger_cost", 240, 120),
    ("catchup", 240, 60),
    # Quick: 53 s measured on a quiet machine (2026-12-07); 40 s stopped it every time.
    ("memory", 240, 120),
    ("baselines", 150, 40),
    ("fanout", 330, 60),
    ("latency", 600, 100),
    # Three stacks (direct, HAProxy with one and two web processes), two rates each.
    ("scale_out", 420, 120),
    # Seven snapshots, built and revalidated; quick: 14 s on a busy machine.
    ("snapshots", 120, 60),
    ("slow_readers", 420, 90),
    ("transports", 300, 60),
    ("bandwidth", 150, 60),
    # The soaks: 10 runs of the latency target's step on the `make run` process set (about
    # 8 min with the new database), then 20 minutes of churn (about 22 min in all).
    ("soak_loss", 900, 90),
    ("soak_churn", 1800, 90),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller N, for development")
    parser.add_argument("--only", action="append", help="run only these scenarios")
    args = parser.parse_args()
    failures = []
    for name, full_s, quick_s in SCENARIOS:
        if args.only and name not in args.only:
            continue
        command = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if args.quick else [])]
        started = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            subprocess.run(command, cwd=REPO, check=True, timeout=quick_s if args.quick else full_s)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            failures.append(name)
            print(f"!! {name} failed: {exc}", flush=True)
        print(f"== {name}: {time.monotonic() - started:.0f} s", flush=True)
    subprocess.run([sys.executable, "-m", "bench.plot"], cwd=REPO, check=False)
    subprocess.run([sys.executable, "-m", "bench.report"], cwd=REPO, check=True)
    if failures:
        print(f"failed: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
