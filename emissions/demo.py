"""Loads the deterministic demo data set: industries, companies, yearly emissions, benchmarks.

The rows come from `emissions.demo_generator`. They are streamed into PostgreSQL with COPY;
the database's own defaults and constraints apply to them as to any other write. Change
capture is paused for the load, which ends in a new change-log epoch (the running totals
and latest totals rebuilt from the tables).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from django.db import connection, transaction
from tqdm import tqdm

from changes.capture import capture_pause_in_transaction
from changes.services import change_log_reset
from common.errors import ApplicationError
from emissions.demo_generator import (
    COMPANY_COLUMNS,
    RECORD_COLUMNS,
    DemoCompany,
    demo_as_of,
    demo_companies,
    demo_industries,
    demo_records,
)

DEMO_COMPANIES = 100_000
DEMO_YEARS = 5
DEMO_LAST_YEAR = 2024

# Rows handed to tqdm per update: updating per row would cost more than generating it.
PROGRESS_STEP = 1_000

# One row per (industry, year, metric) over what anonymous users see: public companies,
# records that are not rejected. The id is an md5 of the row's key, v4-shaped, so reruns
# give the same ids without a random default.
BENCHMARKS_SQL = """
INSERT INTO industry_benchmarks
    (id, industry_id, year, metric, p25, median, p75, mean, company_count, computed_at)
SELECT overlay(overlay(md5(c.industry_id::text || ':' || er.year || ':' || m.metric)
                       PLACING '4' FROM 13 FOR 1) PLACING '8' FROM 17 FOR 1)::uuid,
       c.industry_id, er.year, m.metric,
       round(percentile_cont(0.25) WITHIN GROUP (ORDER BY m.value)::numeric, 3),
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY m.value)::numeric, 3),
       round(percentile_cont(0.75) WITHIN GROUP (ORDER BY m.value)::numeric, 3),
       round(avg(m.value), 3),
       count(*),
       %(computed_at)s
  FROM emission_records er
  JOIN companies c ON c.id = er.company_id
 CROSS JOIN LATERAL (VALUES ('total_tonnes', er.total_tonnes),
                            ('scope1_tonnes', er.scope1_tonnes)) AS m(metric, value)
 WHERE c.is_public AND er.verification_status <> 'rejected'
 GROUP BY c.industry_id, er.year, m.metric
"""

# Companies whose latest_* columns disagree with their newest non-rejected record.
LATEST_MISMATCH_SQL = """
SELECT count(*)
  FROM companies c
  LEFT JOIN (SELECT DISTINCT ON (company_id) company_id, year, total_tonnes
               FROM emission_records
              WHERE verification_status <> 'rejected'
              ORDER BY company_id, year DESC) l ON l.company_id = c.id
 WHERE (c.latest_year, c.latest_total_tonnes) IS DISTINCT FROM (l.year, l.total_tonnes)
"""

DEMO_TABLES = ("industry_benchmarks", "emission_records", "companies", "industries")


class DemoDataExists(ApplicationError):
    """Demo data was asked for on a database that already holds companies."""

    code = "demo_data_exists"


def demo_data_exists() -> bool:
    """Whether any company exists (the demo loader refuses to mix with real data)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM companies)")
        return cursor.fetchone()[0]


def _bar(progress: bool, total: int, desc: str) -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit=" companies",
        unit_scale=True,
        file=sys.stderr,
        disable=not (progress and sys.stderr.isatty()),
        leave=True,
    )


def _stage(progress: bool, text: str) -> None:
    if progress and sys.stderr.isatty():
        tqdm.write(f"{text}...", file=sys.stderr)


def _copy(
    cursor: Any, table: str, columns: Sequence[str], rows: Iterable[tuple], *, progress: bool
) -> int:
    count = 0
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
        # Constraint checks and AFTER triggers run when the COPY ends, which takes a while.
        _stage(progress, f"finishing COPY {table}")
    return count


def _counted(items: Iterable[Any], bar: tqdm) -> Iterator[Any]:
    pending = 0
    for item in items:
        yield item
        pending += 1
        if pending == PROGRESS_STEP:
            bar.update(pending)
            pending = 0
    bar.update(pending)


def _kept(item: Any, into: list) -> Any:
    into.append(item)
    return item


def demo_data_load(
    *,
    companies: int,
    years: int,
    seed: int,
    last_year: int = DEMO_LAST_YEAR,
    replace: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Load the seeded demo data set in one transaction and return the row counts."""
    if companies < 0 or years < 1:
        raise ValueError("companies must be >= 0 and years >= 1")
    rng = random.Random(seed)
    year_range = range(last_year - years + 1, last_year + 1)
    as_of = demo_as_of(last_year)
    counts: dict[str, int] = {}
    with transaction.atomic():
        if replace:
            # ACCESS EXCLUSIVE until commit; CASCADE also empties tables referencing these.
            with connection.cursor() as cursor:
                cursor.execute(f"TRUNCATE {', '.join(DEMO_TABLES)} CASCADE")
        elif demo_data_exists():
            raise DemoDataExists("Companies already exist.")

        connection.ensure_connection()
        with connection.connection.cursor() as cursor:
            # Half a million rows are not half a million changes for open dashboards: the
            # load bypasses capture and starts a new change-log epoch below instead.
            capture_pause_in_transaction(cursor)
            industries = demo_industries(rng)
            counts["industries"] = _copy(
                cursor,
                "industries",
                ("id", "slug", "name", "sector"),
                ((i.id, i.profile.slug, i.profile.name, i.profile.sector) for i in industries),
                progress=False,
            )

            # The series parameters are kept so records can be drawn after the companies
            # are in: COPY into emission_records checks its foreign key per row.
            plans: list[DemoCompany] = []
            with _bar(progress, companies, "companies") as bar:
                generated = demo_companies(rng, industries, companies, years=year_range)
                counts["companies"] = _copy(
                    cursor,
                    "companies",
                    COMPANY_COLUMNS,
                    (_kept(company, plans).copy_row() for company in _counted(generated, bar)),
                    progress=progress,
                )
            with _bar(progress, companies, "emission records") as bar:
                counts["emission_records"] = _copy(
                    cursor,
                    "emission_records",
                    RECORD_COLUMNS,
                    demo_records(rng, _counted(plans, bar), years=year_range),
                    progress=progress,
                )
            plans.clear()

            _stage(progress, "computing industry benchmarks")
            cursor.execute(BENCHMARKS_SQL, {"computed_at": as_of})
            counts["industry_benchmarks"] = cursor.rowcount

        # A new epoch: the running totals and the companies' latest totals are rebuilt
        # from the loaded tables.
        change_log_reset(reason=f"demo data loaded ({companies} companies, seed {seed})")
        with connection.cursor() as cursor:
            _stage(progress, "checking the companies' latest totals")
            cursor.execute(LATEST_MISMATCH_SQL)
            mismatched = cursor.fetchone()[0]
            if mismatched:
                raise RuntimeError(f"{mismatched} companies have stale latest totals")
            cursor.execute("SELECT count(*) FROM companies WHERE latest_year IS NOT NULL")
            counts["companies_with_latest"] = cursor.fetchone()[0]

    _stage(progress, "analyzing")
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {', '.join(DEMO_TABLES)}")
    return counts
