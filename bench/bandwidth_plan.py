"""What the bandwidth scenario's writer does (bench/bandwidth.py): the dashboard view's
records, the plan of corrections and background changes over the window, and its writing."""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass
from decimal import Decimal

import psycopg

SCOPES = ("scope1_tonnes", "scope2_tonnes", "scope3_tonnes")

VIEW_RECORDS_SQL = """
SELECT c.id::text, e.id::text, e.scope1_tonnes, e.scope2_tonnes, e.scope3_tonnes
  FROM companies c
  JOIN emission_records e ON e.company_id = c.id AND e.year = c.latest_year
 WHERE c.id = ANY(%s::uuid[]) AND e.verification_status <> 'rejected'
"""
# Records elsewhere for the app-wide changes: a 1% sample of the table's pages is plenty
# (a few thousand records) and costs milliseconds, not a scan.
BACKGROUND_SQL = """
SELECT e.id::text, e.company_id::text
  FROM emission_records e TABLESAMPLE SYSTEM (1) REPEATABLE (%s)
  JOIN companies c ON c.id = e.company_id
 WHERE c.is_public AND e.verification_status <> 'rejected' AND c.id <> ALL(%s::uuid[])
"""
REVISE_SQL = {
    scope: f"UPDATE emission_records SET {scope} = round({scope} * %s, 3), source = %s"
    " WHERE id = %s RETURNING total_tonnes"
    for scope in SCOPES
}


@dataclass
class Change:
    due_s: float  # after the window opened, compressed
    view: bool
    company_id: str
    record_id: str
    scope: str
    factor: Decimal
    stamp_ns: int = 0
    total_after: float | None = None


def revision_factor(rng: random.Random) -> Decimal:
    """A metric revision as the simulator makes them, never exactly 1 (a no-op total)."""
    while True:
        factor = Decimal(str(round(rng.lognormvariate(0, 0.08), 4)))
        if factor != 1:
            return factor


def view_records(database_url: str, company_ids: list[str]) -> list[tuple[str, str, list[str]]]:
    """(company, its latest visible record, the scopes large enough that a revision
    moves the total) of each view company that has a latest year."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(VIEW_RECORDS_SQL, [company_ids]).fetchall()
    out = []
    for company, record, *scopes in rows:
        usable = [name for name, value in zip(SCOPES, scopes, strict=True) if value >= 10]
        if usable:
            out.append((company, record, usable))
    return out


def background_records(database_url: str, seed: int, view: list[str]) -> list[tuple[str, str]]:
    """(record, company) of visible records of public companies outside the view."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(BACKGROUND_SQL, [seed, view]).fetchall()


def change_plan(
    view: list[tuple[str, str, list[str]]],
    background: list[tuple[str, str]],
    *,
    view_changes: int,
    background_changes: int,
    window_s: float,
    reload_s: float,
    rng: random.Random,
) -> list[Change]:
    """Every change of the window, in time order. The view's land at random times, but
    not in the last half reload interval, so the last reload can show every one; the
    others are evenly spread (a steady app-wide rate)."""
    plan = []
    for _ in range(view_changes):
        company, record, scopes = rng.choice(view)
        plan.append(
            Change(
                due_s=rng.uniform(0, window_s - reload_s / 2),
                view=True,
                company_id=company,
                record_id=record,
                scope=rng.choice(scopes),
                factor=revision_factor(rng),
            )
        )
    for i in range(background_changes):
        record, company = rng.choice(background)
        plan.append(
            Change(
                due_s=(i + 0.5) * window_s / background_changes,
                view=False,
                company_id=company,
                record_id=record,
                scope=rng.choice(SCOPES),
                factor=revision_factor(rng),
            )
        )
    return sorted(plan, key=lambda c: c.due_s)


def write_plan(database_url: str, plan: list[Change], opened: float, stats: dict) -> None:
    """Commit each change at its time (late ones at once), stamped as bench/harness/writer.py's
    Writer does: the stamp is taken just before the autocommitted UPDATE is sent."""
    durations = []
    late_max = 0.0
    with psycopg.connect(database_url, autocommit=True) as conn:
        for change in plan:
            wait = opened + change.due_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                late_max = max(late_max, -wait)
            change.stamp_ns = time.time_ns()
            row = conn.execute(
                REVISE_SQL[change.scope],
                [change.factor, f"bench:{change.stamp_ns}", change.record_id],
            ).fetchone()
            durations.append(time.time_ns() - change.stamp_ns)
            change.total_after = float(row[0])
    stats.update(
        changes=len(plan),
        late_max_ms=round(late_max * 1000, 1),
        statement_p50_ms=round(statistics.median(durations) / 1e6, 2) if durations else None,
    )
