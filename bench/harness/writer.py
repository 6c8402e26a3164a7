"""The stamped writer and its workload: which records change, at what rate, who follows
what, and where a change's time went before the fan-out."""

from __future__ import annotations

import random
import time

import psycopg

MINOR_SQL = (
    "UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1,"
    " source = %s || CASE WHEN source LIKE '%%:up' THEN ':up' ELSE '' END WHERE id = %s"
)
# Up by 12% of the total, then back down by the same amount (10.7% of the raised total):
# both are `major` (>= 10%), and a record never drifts far however often it is picked.
MAJOR_SQL = (
    "UPDATE emission_records SET scope1_tonnes = CASE WHEN source LIKE '%%:up'"
    " THEN GREATEST(scope1_tonnes - total_tonnes * 0.12 / 1.12, 0)"
    " ELSE scope1_tonnes + total_tonnes * 0.12 END,"
    " source = %s || CASE WHEN source LIKE '%%:up' THEN ':down' ELSE ':up' END WHERE id = %s"
)
# Records the writer may touch: public companies, visible records, totals far below the
# year's top 10 (entering it would be a different kind of significant change).
POOL_SQL = """
SELECT e.id::text, e.company_id::text, i.slug
  FROM emission_records e
  JOIN companies c ON c.id = e.company_id
  JOIN industries i ON i.id = c.industry_id
 WHERE c.is_public AND e.verification_status <> 'rejected' AND e.year = %s
   AND e.total_tonnes BETWEEN 10000 AND 300000
 ORDER BY md5(e.id::text || %s)
"""
POOL_YEAR = 2024


class Writer:
    """Single-row UPDATEs at a fixed rate on its own connection, each stamped."""

    def __init__(self, database_url: str):
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.last_stamp_ns = 0

    def change(self, record_id: str, major: bool) -> tuple[int, int]:
        """One autocommitted update; returns (stamp, ns the statement and commit took)."""
        stamp = time.time_ns()
        self.conn.execute(MAJOR_SQL if major else MINOR_SQL, [f"bench:{stamp}", record_id])
        self.last_stamp_ns = stamp
        return stamp, time.time_ns() - stamp

    def run(self, rate: float, seconds: float, pick, stats: dict) -> None:
        """`rate` changes/s for `seconds` on an absolute schedule (late ones go at once)."""
        count = max(1, int(rate * seconds))
        durations = []
        late_max = 0.0
        started = time.monotonic()
        for i in range(count):
            due = started + i / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                late_max = max(late_max, -wait)
            durations.append(self.change(*pick())[1])
        elapsed = time.monotonic() - started
        durations.sort()
        stats.update(
            changes=count,
            achieved_rate=round(count / elapsed, 1),
            late_max_ms=round(late_max * 1000, 1),
            statement_p50_ms=round(durations[len(durations) // 2] / 1e6, 2),
            statement_p99_ms=round(durations[int(len(durations) * 0.99)] / 1e6, 2),
        )

    def head_seq(self) -> int:
        return self.conn.execute("SELECT head_seq FROM change_log_state").fetchone()[0]

    def close(self) -> None:
        self.conn.close()


STAGES_SQL = """
WITH s AS (
  SELECT split_part(change_data->'new'->>'source', ':', 2)::numeric / 1e6 AS stamp_ms,
         extract(epoch FROM created_at) * 1000 AS captured_ms,
         extract(epoch FROM processed_at) * 1000 AS published_ms
    FROM data_changes
   WHERE seq > %s AND seq <= %s AND entity = 'emission_record'
     AND change_data->'new'->>'source' LIKE 'bench:%%'
)
SELECT count(*),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY captured_ms - stamp_ms),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY published_ms - stamp_ms)
  FROM s
"""


def stages(database_url: str, seq_lo: int, seq_hi: int) -> dict:
    """Where a change's time goes before the fan-out, from the log: stamp to capture (the
    trigger's clock_timestamp) and stamp to the publisher's processed_at (claimed, routed,
    about to commit)."""
    with psycopg.connect(database_url) as conn:
        count, captured, published = conn.execute(STAGES_SQL, [seq_lo, seq_hi]).fetchone()
    if not count:
        return {}
    return {
        "changes": count,
        "to_capture_p50_ms": round(float(captured[0]), 2),
        "to_capture_p99_ms": round(float(captured[1]), 2),
        "to_published_p50_ms": round(float(published[0]), 2),
        "to_published_p99_ms": round(float(published[1]), 2),
    }


def record_pool(database_url: str, seed: int) -> list[tuple[str, str, str]]:
    """(record id, company id, industry slug) of every record the writer may touch."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(POOL_SQL, [POOL_YEAR, str(seed)]).fetchall()


# Who the clients follow (the DESIGN mix): one of 100 companies, one of 10 industries or
# the overview; the overview's share is what is left.
PLAN_SHARES = {"companies": 0.6, "industries": 0.3, "overview": 0.1}


class Workload:
    """The DESIGN mix: who follows what, and which record each change touches."""

    def __init__(
        self,
        pool: list[tuple[str, str, str]],
        *,
        seed: int,
        major_share: float,
        followed_share: float,
    ):
        self.rng = random.Random(seed)
        self.pool = pool
        by_company = {company: record for record, company, _ in pool}
        self.companies = list(by_company)[:100]
        self.company_records = [by_company[c] for c in self.companies]
        slugs = sorted({slug for _, _, slug in pool})
        self.industries = self.rng.sample(slugs, min(10, len(slugs)))
        self.major_share = major_share
        self.followed_share = followed_share

    def plan(self, clients: int) -> list[list[str]]:
        companies = round(clients * PLAN_SHARES["companies"])
        industries = round(clients * PLAN_SHARES["industries"])
        plan = [[f"company:{self.companies[i % len(self.companies)]}"] for i in range(companies)]
        plan += [
            [f"industry:{self.industries[i % len(self.industries)]}"] for i in range(industries)
        ]
        plan += [["overview"]] * (clients - companies - industries)
        self.rng.shuffle(plan)
        return plan

    def pick(self) -> tuple[str, bool]:
        if self.rng.random() < self.followed_share:
            record = self.rng.choice(self.company_records)
        else:
            record = self.rng.choice(self.pool)[0]
        return record, self.rng.random() < self.major_share
