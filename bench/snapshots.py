"""Snapshot requests at full scale: the time of each dashboard snapshot, built and
revalidated, on the 100,000-company bench database.

The product's web server and `run_publisher` (bench/harness/stack.py) on the bench
database, nothing else writing. One client on loopback asks each snapshot `--repeat`
times in turn, as a browser's first paint does (a cold body: `GET`), then as a browser
revalidating its copy does (`GET` with the `If-None-Match` of the last answer, which the
server answers 304 from the change-log position before building the body). Times are
the client's, request sent to last byte read, over one kept-alive connection.

    python -m bench.snapshots            # 30 of each
    python -m bench.snapshots --quick    # 10 of each
"""

from __future__ import annotations

import statistics
import time

import httpx
import psycopg

from bench.common import bench_database_ready
from bench.harness.processes import stop_on_sigterm
from bench.harness.scenario import logs_directory, results_write, scenario_parser
from bench.harness.stack import PRODUCT_SERVER, Stack
from bench.harness.tables import fmt_ms, measured_by, table_head, table_row

BUSIEST_INDUSTRY_SQL = """
SELECT i.slug, (SELECT c.id::text FROM companies c
                 WHERE c.industry_id = i.id AND c.is_public ORDER BY c.id LIMIT 1)
  FROM industries i
 ORDER BY (SELECT count(*) FROM companies c WHERE c.industry_id = i.id) DESC
 LIMIT 1
"""


def snapshot_paths(database_url: str) -> dict[str, str]:
    """The snapshots a dashboard's first paint asks for, by name."""
    with psycopg.connect(database_url) as conn:
        slug, company = conn.execute(BUSIEST_INDUSTRY_SQL).fetchone()
    return {
        "overview": "/api/overview/",
        "recent changes": "/api/overview/changes/",
        "industry list": "/api/industries/",
        f"industry detail ({slug})": f"/api/industries/{slug}/",
        "company detail": f"/api/companies/{company}/",
        "directory, first page": "/api/companies/?page_size=50",
        f"directory, {slug} by emissions": (
            f"/api/companies/?industry={slug}&ordering=-total_emissions&page_size=50"
        ),
    }


def timed(client: httpx.Client, path: str, repeat: int, etag: str | None) -> dict:
    headers = {"If-None-Match": etag} if etag else {}
    times, statuses, last = [], set(), None
    for _ in range(repeat):
        started = time.perf_counter()
        last = client.get(path, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        statuses.add(last.status_code)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 2),
        "max_ms": round(times[-1], 2),
        "statuses": sorted(statuses),
        "bytes": len(last.content),
        "etag": last.headers.get("ETag"),
    }


def main() -> None:
    parser = scenario_parser(__doc__, quick="10 requests of each")
    parser.add_argument("--repeat", type=int, help="requests of each kind (30, quick 10)")
    parser.add_argument("--companies", type=int, default=100_000)
    args = parser.parse_args()
    repeat = args.repeat or (10 if args.quick else 30)
    stop_on_sigterm()
    started = time.monotonic()
    database_url = bench_database_ready(companies=args.companies)
    rows = []
    with logs_directory("snapshots") as logs:
        stack = Stack(PRODUCT_SERVER, database_url, logs).start()
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{stack.port}", timeout=30) as client:
                for name, path in snapshot_paths(database_url).items():
                    built = timed(client, path, repeat, None)
                    revalidated = timed(client, path, repeat, built["etag"])
                    rows.append({"name": name, "path": path, "built": built, "304": revalidated})
                    print(
                        f"{name:40} built p50 {built['p50_ms']} p95 {built['p95_ms']} ms"
                        f" ({built['bytes']:,} B, {built['statuses']}); revalidated p50"
                        f" {revalidated['p50_ms']} p95 {revalidated['p95_ms']} ms"
                        f" ({revalidated['statuses']})",
                        flush=True,
                    )
        finally:
            stack.stop()
    results_write(
        "snapshots",
        {"companies": args.companies, "repeat": repeat, "rows": rows},
        quick=args.quick,
        started=started,
    )


def report_section(data: dict) -> list[str]:
    """This scenario's part of docs/benchmarks.md."""
    lines = [
        "## Snapshot requests at 100,000 companies",
        "",
        f"{measured_by(data, 'snapshots')}: the web server and `run_publisher` on the"
        f" {data['companies']:,}-company bench database, nothing writing; one client on"
        f" loopback asks each snapshot {data['repeat']} times for its body, then"
        f" {data['repeat']} times with the `If-None-Match` of the last answer (a browser"
        " revalidating its copy: 304 from the change-log position, before the body is"
        " built). Client-side times, request to last byte, one kept-alive connection."
        " Issue #16 asks for at most 10 ms p95 for the bodies; the 304 column is item 2.",
        "",
        *table_head(
            "snapshot",
            "body p50 ms",
            "body p95 ms",
            "body bytes",
            "304 p50 ms",
            "304 p95 ms",
            "304 answered",
        ),
    ]
    for row in data["rows"]:
        built, revalidated = row["built"], row["304"]
        lines.append(
            table_row(
                f"{row['name']} (`{row['path']}`)",
                fmt_ms(built["p50_ms"]),
                fmt_ms(built["p95_ms"]),
                f"{built['bytes']:,}",
                fmt_ms(revalidated["p50_ms"]),
                fmt_ms(revalidated["p95_ms"]),
                "yes" if revalidated["statuses"] == [304] else f"no: {revalidated['statuses']}",
            )
        )
    return [*lines, ""]


if __name__ == "__main__":
    main()
