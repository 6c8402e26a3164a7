"""Summarise the recovery times the fault tests appended to
test-artifacts/faults/recovery.jsonl, one line per fault, for docs/operations.md:

    python -m tests.faults.report [path]

For each fault: how many runs, then over those runs min / median / max of the slowest
client's recovery (fault to its first batch after the service was back) and of the
fastest client's, and of the time from the service being back to the first batch.
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

# tests/faults/conftest.py writes it (not imported here: that needs Django).
RECOVERY_LOG = Path(__file__).resolve().parents[2] / "test-artifacts" / "faults" / "recovery.jsonl"


def spread(values: list[float]) -> str:
    return (
        f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"
        if values
        else "-"
    )


def main(path: Path) -> None:
    runs: dict[str, list[dict]] = defaultdict(list)
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            runs[record["fault"]].append(record)
    print("| fault | runs | slowest client | fastest client | back to first batch | extra |")
    print("| --- | --- | --- | --- | --- | --- |")
    for fault, records in runs.items():
        extra = []
        if any("beat_first_batch_s" in r for r in records):
            beat = [r["beat_first_batch_s"]["max"] for r in records]
            extra.append(f"beat, publisher down: {spread(beat)}")
        if any("server_listening_s" in r for r in records):
            extra.append(f"listening again: {spread([r['server_listening_s'] for r in records])}")
        if any("start_s" in r for r in records):
            extra.append(f"PostgreSQL start: {spread([r['start_s'] for r in records])}")
        print(
            f"| {fault} | {len(records)}"
            f" | {spread([r['recovery_s']['max'] for r in records])}"
            f" | {spread([r['recovery_s']['min'] for r in records])}"
            f" | {spread([r['after_back_s']['max'] for r in records])}"
            f" | {'; '.join(extra)} |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else RECOVERY_LOG)
