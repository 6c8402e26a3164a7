"""Catch-up: 1,000 missed changes for 3 contexts out of a log of 10,000,000 changes.

DESIGN.md: "under 50 ms server time, index only". The scenario

1. builds, in its own database (`carbon_bench_log`; `--quick`: `carbon_bench_log_quick`
   with 1,000,000 changes), a published change log with SQL alone: `data_changes` rows
   shaped like the publisher's (80% emission-record updates routed to their company and
   industry, a quarter of them `major` and so also to `overview`; 20% aggregate rows, per
   audience, routed to `overview` and their industry) over 100,000 companies (one in ten
   not public) and 30 industries, plus the matching `change_routes`. The database is
   kept between runs and reused when it already holds the log (`--rebuild` forces);
2. picks cursors for `company:<uuid>`, `industry:<slug>` and `overview` so that exactly
   1,000 public items follow them in total, and times `changes_since` in-process (Django
   set up against that database) over repeated warm calls;
3. runs EXPLAIN (ANALYZE, BUFFERS) of every statement the call issued and checks that
   `change_routes` and `data_changes` are read through their indexes only.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from bench.common import BENCH_DB, manage, result_write, server_url, verdict

TARGET_MS = 50.0
MISSED = 1_000
FULL_ROWS = 10_000_000
QUICK_ROWS = 1_000_000
COMPANIES = 100_000
# Bumped whenever the generated shape changes, so an older log is rebuilt, not reused.
SHAPE_VERSION = 1
# Rows per INSERT ... SELECT; two run at a time (the machine has two cores).
CHUNK = 500_000
LOAD_THREADS = 2

# The demo's 30 industries (slug, sector), as seed_demo creates them.
INDUSTRIES = [
    ("aerospace-defense", "Industrials"),
    ("agriculture", "Consumer Staples"),
    ("airlines", "Transportation"),
    ("aluminium", "Materials"),
    ("automotive", "Consumer Discretionary"),
    ("banking", "Financials"),
    ("cement", "Materials"),
    ("chemicals", "Materials"),
    ("coal", "Energy"),
    ("construction", "Industrials"),
    ("food-beverage", "Consumer Staples"),
    ("insurance", "Financials"),
    ("it-services", "Information Technology"),
    ("logistics", "Transportation"),
    ("machinery", "Industrials"),
    ("media", "Communication Services"),
    ("mining", "Materials"),
    ("oil-gas", "Energy"),
    ("paper-packaging", "Materials"),
    ("pharmaceuticals", "Health Care"),
    ("railways", "Transportation"),
    ("real-estate", "Real Estate"),
    ("retail", "Consumer Discretionary"),
    ("semiconductors", "Information Technology"),
    ("shipping", "Transportation"),
    ("software", "Information Technology"),
    ("steel", "Materials"),
    ("telecom", "Communication Services"),
    ("utilities", "Utilities"),
    ("water-utilities", "Utilities"),
]

# Company n is md5('company:' || n)::uuid, industry k (1-based) md5('industry:' || k)::uuid:
# the same ids in the log, its routes and the industries table, with no lookup table.
# Seq s belongs to company hash(s) mod COMPANIES: pseudo-random and repeatable, so each
# company's ~80 changes are spread over the whole log, as a real company's would be.
# Timestamps: one change every 50 ms ending now (10,000,000 span 5.8 days, inside the
# 7-day retention), published 20 ms after capture.
EMISSION_SQL = """
WITH g AS (
    SELECT s,
           abs(hashint4(s::int)::bigint) %% %(companies)s AS c,
           abs(hashint4((s::int) # 1431655765)::bigint) AS h
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS s
     WHERE s %% 10 < 8
), e AS (
    SELECT s, h,
           md5('company:' || c)::uuid::text AS company_id,
           md5('industry:' || (1 + c %% 30))::uuid::text AS industry_id,
           (%(slugs)s::text[])[1 + c %% 30] AS slug,
           c %% 10 <> 0 AS public,
           h %% 4 = 0 AS major,
           2019 + (s / 10) %% 6 AS year,
           md5('record:' || c || ':' || (2019 + (s / 10) %% 6))::uuid::text AS record_id,
           round((h %% 1000000) / 100.0, 3) AS s1,
           round((h %% 700000) / 100.0, 3) AS s2,
           round((h %% 3000000) / 100.0, 3) AS s3,
           %(end)s::timestamptz - (%(rows)s - s) * interval '50 ms' AS at
      FROM g
), inserted AS (
    INSERT INTO data_changes (id, capture_id, table_name, entity, record_id, change_type,
                              changed_columns, change_data, routing, created_at,
                              processed_at, seq, contexts, significance, audience)
    SELECT md5('change:' || s)::uuid, s, 'emission_records', 'emission_record', record_id,
           'update', ARRAY['scope1_tonnes', 'total_tonnes']::varchar[],
           jsonb_build_object(
               'old', jsonb_build_object('total_tonnes', s1 + s2 + s3, 'scope1_tonnes', s1),
               'new', jsonb_build_object(
                   'total_tonnes', s1 * (CASE WHEN major THEN 1.5 ELSE 1.01 END) + s2 + s3,
                   'scope1_tonnes', s1 * (CASE WHEN major THEN 1.5 ELSE 1.01 END))),
           jsonb_build_object(
               'row', NULL, 'year', year, 'company_id', company_id,
               'industry_id', industry_id,
               'total_tonnes', s1 * (CASE WHEN major THEN 1.5 ELSE 1.01 END) + s2 + s3,
               'scope1_tonnes', s1 * (CASE WHEN major THEN 1.5 ELSE 1.01 END),
               'scope2_tonnes', s2, 'scope3_tonnes', s3, 'company_public', public,
               'old_industry_id', NULL, 'old_company_public', NULL,
               'verification_status', CASE WHEN h %% 3 = 0 THEN 'verified' ELSE 'pending' END),
           at, at + interval '20 ms', s,
           ARRAY['company:' || company_id, 'industry:' || slug]::varchar[]
               || CASE WHEN major THEN ARRAY['overview']::varchar[] ELSE '{}' END,
           CASE WHEN major THEN 'major' ELSE 'minor' END, NULL
      FROM e
    RETURNING seq, contexts, (routing ->> 'company_public')::boolean AS public
)
INSERT INTO change_routes (context, seq, audiences)
SELECT context, seq, CASE WHEN public THEN 3 ELSE 2 END
  FROM inserted, unnest(contexts) AS context
"""

# The publisher's aggregate rows: one per audience (seq ending in 8: public, 9: staff),
# routed to overview and the industry, for that audience only.
AGGREGATE_SQL = """
WITH g AS (
    SELECT s,
           (%(slugs)s::text[])[1 + (abs(hashint4(s::int)::bigint) %% %(companies)s) %% 30]
               AS slug,
           abs(hashint4((s::int) # 1431655765)::bigint) AS h,
           2019 + (s / 10) %% 6 AS year,
           %(end)s::timestamptz - (%(rows)s - s) * interval '50 ms' AS at
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS s
     WHERE s %% 10 >= 8
), inserted AS (
    INSERT INTO data_changes (id, capture_id, table_name, entity, record_id, change_type,
                              changed_columns, change_data, routing, created_at,
                              processed_at, seq, contexts, significance, audience)
    SELECT md5('change:' || s)::uuid, 0, 'aggregate_totals', 'aggregate',
           'industry:' || slug || ':' || year, 'update',
           ARRAY['total_tonnes', 'scope1_tonnes']::varchar[],
           jsonb_build_object(
               'old', jsonb_build_object('total_tonnes', (h %% 90000000) / 10.0,
                                         'scope1_tonnes', (h %% 30000000) / 10.0),
               'new', jsonb_build_object(
                   'scope', 'industry:' || slug, 'year', year,
                   'total_tonnes', (h %% 90000000) / 10.0 + 12.5,
                   'scope1_tonnes', (h %% 30000000) / 10.0 + 12.5,
                   'scope2_tonnes', (h %% 20000000) / 10.0,
                   'scope3_tonnes', (h %% 40000000) / 10.0,
                   'reporting_companies', 3000 + h %% 400)),
           '{}'::jsonb, at, at + interval '20 ms', s,
           ARRAY['overview', 'industry:' || slug]::varchar[], 'minor',
           CASE WHEN s %% 10 = 8 THEN 'public' ELSE 'staff' END
      FROM g
    RETURNING seq, contexts, audience
)
INSERT INTO change_routes (context, seq, audiences)
SELECT context, seq, CASE WHEN audience = 'public' THEN 1 ELSE 2 END
  FROM inserted, unnest(contexts) AS context
"""

LOG_TABLES = ("data_changes", "change_routes")


# -- the log ---------------------------------------------------------------------------


def log_database(quick: bool) -> tuple[str, str]:
    """(name, URL) of the log's own database on the server of DATABASE_URL."""
    name = f"{BENCH_DB}_log_quick" if quick else f"{BENCH_DB}_log"
    return name, f"{server_url().rpartition('/')[0]}/{name}"


def log_database_ready(name: str, url: str) -> None:
    """Create the database if needed and bring its schema up to date."""
    admin_url = server_url().rpartition("/")[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    manage("migrate", "--noinput", "-v", "0", database_url=url)


def log_built(url: str, rows: int) -> dict | None:
    """The build record if the database holds a log of `rows` changes of this shape."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_log_build (rows bigint, shape int, routes bigint,"
            " build_s double precision, built_at timestamptz DEFAULT now())"
        )
        row = conn.execute("SELECT rows, shape, routes, build_s, built_at FROM bench_log_build")
        row = row.fetchone()
        if row is None or row[0] != rows or row[1] != SHAPE_VERSION:
            return None
        # The log tables are UNLOGGED (see log_build): a crash of PostgreSQL empties them.
        top = conn.execute("SELECT max(seq) FROM data_changes WHERE seq IS NOT NULL")
        top = top.fetchone()[0]
        if top != rows:
            return None
    return {"rows": row[0], "routes": row[2], "build_s": round(row[3], 1), "built_at": row[4]}


def _indexes(conn: psycopg.Connection, table: str) -> list[tuple[str, str]]:
    """(name, DDL that recreates it) for every index of `table`, constraints included."""
    rows = conn.execute(
        "SELECT i.relname, c.conname, pg_get_constraintdef(c.oid), pg_get_indexdef(i.oid)"
        " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.contype IN ('p', 'u')"
        " WHERE x.indrelid = %s::regclass ORDER BY x.indisprimary DESC, i.relname",
        [table],
    ).fetchall()
    out = []
    for index, constraint, constraint_def, index_def in rows:
        if constraint:
            out.append(
                (
                    f"ALTER TABLE {table} DROP CONSTRAINT {constraint}",
                    f"ALTER TABLE {table} ADD CONSTRAINT {constraint} {constraint_def}",
                )
            )
        else:
            out.append((f"DROP INDEX {index}", index_def))
    return out


def _load_chunk(url: str, lo: int, hi: int, rows: int, end: str) -> None:
    params = {
        "lo": lo,
        "hi": hi,
        "rows": rows,
        "end": end,
        "companies": COMPANIES,
        "slugs": [slug for slug, _ in INDUSTRIES],
    }
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute(EMISSION_SQL, params)
        conn.execute(AGGREGATE_SQL, params)


def log_build(url: str, rows: int) -> dict:
    """Fill data_changes and change_routes with a published log of `rows` changes.

    Indexes are dropped during the load and built once at the end (several times faster
    than maintaining them row by row). The two tables are made UNLOGGED first: the load
    then writes no WAL (some 15 GB at full size, on a server with max_wal_size 1 GB that
    other benchmarks share); reads, which is all this scenario measures, are the same.
    """
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE data_changes, change_routes, context_heads, bench_log_build")
        recreate: list[str] = []
        for table in LOG_TABLES:
            conn.execute(f"ALTER TABLE {table} SET UNLOGGED")
            for drop, create in _indexes(conn, table):
                conn.execute(drop)
                recreate.append(create)
        conn.execute(
            "INSERT INTO industries (id, slug, name, sector)"
            " SELECT md5('industry:' || n)::uuid, slug, initcap(replace(slug, '-', ' ')), sector"
            " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(slug, sector, n)"
            " ON CONFLICT (slug) DO NOTHING",
            [[slug for slug, _ in INDUSTRIES], [sector for _, sector in INDUSTRIES]],
        )
        end = conn.execute("SELECT now()::text").fetchone()[0]

    chunks = [(lo, min(lo + CHUNK - 1, rows)) for lo in range(1, rows + 1, CHUNK)]
    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        for future in [pool.submit(_load_chunk, url, lo, hi, rows, end) for lo, hi in chunks]:
            future.result()
    loaded = time.perf_counter()

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        for create in recreate:
            conn.execute(create)
        indexed = time.perf_counter()
        # A log that old has been vacuumed: hint bits set, visibility map complete.
        for table in LOG_TABLES:
            conn.execute(f"VACUUM (ANALYZE) {table}")
        conn.execute(
            "SELECT setval('data_changes_seq_seq', %s), setval('data_changes_capture_id_seq', %s)",
            [rows, rows],
        )
        conn.execute(
            "UPDATE change_log_state SET epoch = md5(random()::text || clock_timestamp()::text),"
            " head_seq = %s, pruned_through_seq = 0,"
            " last_published_at = (SELECT max(processed_at) FROM data_changes) WHERE id = 1",
            [rows],
        )
        routes = conn.execute("SELECT count(*) FROM change_routes").fetchone()[0]
        build_s = time.perf_counter() - started
        conn.execute(
            "INSERT INTO bench_log_build (rows, shape, routes, build_s) VALUES (%s, %s, %s, %s)",
            [rows, SHAPE_VERSION, routes, build_s],
        )
    return {
        "rows": rows,
        "routes": routes,
        "build_s": round(build_s, 1),
        "load_s": round(loaded - started, 1),
        "index_s": round(indexed - loaded, 1),
        "built_at": "this run",
    }


def log_sizes(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(
                "SELECT pg_size_pretty(pg_total_relation_size(%s::regclass))", [table]
            ).fetchone()[0]
            for table in LOG_TABLES
        }


# -- cursors ---------------------------------------------------------------------------


def cursors_pick(url: str) -> dict[str, Any]:
    """Three contexts and cursors that leave exactly MISSED public items after them.

    A company (all its changes, up to 100: a client that followed one company and came
    back days later), an industry (400) and overview (the rest), each counted on the
    routes anonymous users may see.
    """
    public_company = 1  # company n is public unless n % 10 == 0
    company = f"company:{_uuid_of(url, f'company:{public_company}')}"
    wanted = {company: 100, "industry:steel": 400}
    cursors: dict[str, int] = {}
    expected: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        for context, missed in wanted.items():
            cursors[context], expected[context] = _cursor_missing(conn, context, missed)
        overview_missed = MISSED - sum(expected.values())
        cursors["overview"], expected["overview"] = _cursor_missing(
            conn, "overview", overview_missed
        )
    return {"cursors": cursors, "expected": expected}


def _uuid_of(url: str, text: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT md5(%s)::uuid::text", [text]).fetchone()[0]


def _cursor_missing(conn: psycopg.Connection, context: str, missed: int) -> tuple[int, int]:
    """(cursor, count): the cursor after which `missed` public routes follow (or all of
    them from 0, when the context has fewer)."""
    row = conn.execute(
        "SELECT seq FROM change_routes WHERE context = %s AND audiences & 1 <> 0"
        " ORDER BY seq DESC OFFSET %s LIMIT 1",
        [context, missed],
    ).fetchone()
    cursor = row[0] if row else 0
    count = conn.execute(
        "SELECT count(*) FROM change_routes WHERE context = %s AND seq > %s AND audiences & 1 <> 0",
        [context, cursor],
    ).fetchone()[0]
    return cursor, count


# -- measuring -------------------------------------------------------------------------


def _django_setup(url: str) -> None:
    """Django against the log's database, in this process (settings read it at setup),
    with the garbage collector set as a web server process sets it (config/asgi.py):
    catch-ups are served there, so that is the collector they meet."""
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from realtime.server import garbage_collector_tune

    garbage_collector_tune()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(_percentile(ms, 0.95), 2),
        "max_ms": round(max(ms), 2),
        "min_ms": round(min(ms), 2),
    }


def measure(cursors: dict[str, int], repeat: int, warmup: int) -> dict[str, Any]:
    """Wall time of changes_since in this process, with the share spent in SQL."""
    from django.db import connection

    from changes.selectors import changes_since

    statements: list[tuple[str, Any, float]] = []

    def timed(execute: Any, sql: str, params: Any, many: bool, context: dict) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            statements.append((sql, params, time.perf_counter() - started))

    def call(**kwargs) -> tuple[float, Any]:
        started = time.perf_counter()
        result = changes_since(**kwargs)
        return time.perf_counter() - started, result

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")  # the pool's first connection is not the catch-up's cost
    first_s, first = call(cursors=cursors, audience="public", limit=5000)
    for _ in range(warmup):
        call(cursors=cursors, audience="public", limit=5000)

    # The collector's share: each call allocates tens of thousands of objects, enough to
    # set off full collections, which traverse every object of the process.
    collections = {"seconds": [0.0, 0.0, 0.0], "count": [0, 0, 0], "started": 0.0}

    def collected(phase: str, info: dict) -> None:
        if phase == "start":
            collections["started"] = time.perf_counter()
        else:
            generation = info["generation"]
            collections["seconds"][generation] += time.perf_counter() - collections["started"]
            collections["count"][generation] += 1

    times, sql_times = [], []
    gc.callbacks.append(collected)
    try:
        with connection.execute_wrapper(timed):
            for _ in range(repeat):
                statements.clear()
                elapsed, result = call(cursors=cursors, audience="public", limit=5000)
                times.append(elapsed)
                sql_times.append(sum(t for _, _, t in statements))
    finally:
        gc.callbacks.remove(collected)
    issued = [(sql, params) for sql, params, _ in statements]

    # What a WebSocket subscribe does instead: one call per context, frames of 500.
    per_context = []
    for _ in range(repeat):
        started = time.perf_counter()
        for context, cursor_seq in cursors.items():
            changes_since(cursors={context: cursor_seq}, audience="public", limit=500)
        per_context.append(time.perf_counter() - started)

    per_context_items: dict[str, int] = {}
    for item in result.items:
        per_context_items[item["context"]] = per_context_items.get(item["context"], 0) + 1
    return {
        "first_call_ms": round(first_s * 1000, 2),
        "first_call_items": len(first.items),
        "call": _summary_ms(times),
        "sql_in_call": _summary_ms(sql_times),
        "python_in_call_p50_ms": round(
            statistics.median(t - s for t, s in zip(times, sql_times, strict=True)) * 1000, 2
        ),
        "gc": {
            "per_call_ms": round(sum(collections["seconds"]) / repeat * 1000, 2),
            "full_collections": collections["count"][2],
            "full_collection_ms": round(
                collections["seconds"][2] / max(1, collections["count"][2]) * 1000, 1
            ),
            "tracked_objects": len(gc.get_objects()),
        },
        "per_context_calls": _summary_ms(per_context),
        "items": len(result.items),
        "items_per_context": per_context_items,
        "has_more": result.has_more,
        "resets": [reset.reason for reset in result.resets],
        "statements": issued,
    }


_EXECUTION = re.compile(r"Execution Time: ([\d.]+) ms")
_PLANNING = re.compile(r"Planning Time: ([\d.]+) ms")
# A scan node of a text plan: "Index Scan using change_routes_pkey on change_routes ...".
_SCAN = re.compile(
    r"((?:Parallel )?(?:Seq|Index Only|Index|Bitmap Heap) Scan)(?: using \S+)? on (\w+)"
)


def _statement_name(sql: str, params: Any) -> str:
    if "FROM change_log_state" in sql:
        return "log state"
    if "FROM industries" in sql:
        return "industry slugs"
    if "count(*)" in sql and "change_routes" in sql:
        return f"missed count {params[0]}"
    if "FROM change_routes" in sql:
        return f"route range {params[0]}"
    if "FROM data_changes" in sql:
        return "data_changes fetch"
    return sql[:40]


def explain(url: str, statements: list[tuple[str, Any]]) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement of one call, bound as Django binds
    them (client side); the second of two runs, so the cache is as warm as in `measure`."""
    plans = {}
    with psycopg.connect(url, cursor_factory=psycopg.ClientCursor) as conn:
        for sql, params in statements:
            text = ""
            for _ in range(2):
                rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params).fetchall()
                text = "\n".join(row[0] for row in rows)
            scans = _SCAN.findall(text)
            plans[_statement_name(sql, params)] = {
                "execution_ms": float(_EXECUTION.search(text).group(1)),
                "planning_ms": float(_PLANNING.search(text).group(1)),
                "scans": [f"{kind} on {table}" for kind, table in scans],
                "plan": text,
            }
    log_scans = [
        scan
        for plan in plans.values()
        for scan in plan["scans"]
        if scan.split(" on ")[1] in LOG_TABLES
    ]
    return {
        "plans": plans,
        "sql_execution_ms": round(sum(p["execution_ms"] for p in plans.values()), 3),
        "sql_planning_ms": round(sum(p["planning_ms"] for p in plans.values()), 3),
        "index_only": bool(log_scans) and not any("Seq Scan" in scan for scan in log_scans),
        "log_scans": sorted(set(log_scans)),
    }


# -- the report ------------------------------------------------------------------------


# The seq list of the data_changes fetch: a thousand numbers, shortened in the report.
_ANY_LIST = re.compile(r"'\{(\d+(?:,\d+)*)\}'")


def _any_list_short(match: re.Match) -> str:
    values = match.group(1).split(",")
    if len(values) <= 6:
        return match.group(0)
    return f"'{{{','.join(values[:3])},... {len(values) - 6:,} more ...,{','.join(values[-3:])}}}'"


def report_section(data: dict) -> list[str]:
    """This scenario's part of docs/benchmarks.md."""
    m = data["machine"]
    log, call, plans = data["log"], data["measured"]["call"], data["explain"]
    gc_stats = data["measured"]["gc"]
    ok = call["p95_ms"] < TARGET_MS and plans["index_only"]
    lines = [
        "## Catch-up",
        "",
        f"Measured {m['date']} on {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}"
        f" (`python -m bench.catchup{' --quick' if data['quick'] else ''}`). A published log of"
        f" {log['rows']:,} changes ({log['routes']:,} routes; data_changes"
        f" {data['sizes']['data_changes']}, change_routes {data['sizes']['change_routes']})"
        " built with SQL in its own database: emission-record updates over 100,000 companies"
        " and 30 industries, a quarter of them major (also routed to overview), and the"
        " publisher's aggregate rows per audience. Three contexts with"
        f" {data['measured']['items']:,} missed public items in total"
        f" ({', '.join(f'{c}: {n}' for c, n in data['expected'].items())});"
        f" `changes_since(..., audience='public', limit=5000)` called in-process,"
        f" {data['repeat']} warm calls; 1-minute load average"
        f" {data['load_average']['before'][0]:.2f} when they started.",
        "",
        "| figure | target | measured | |",
        "| --- | --- | --- | --- |",
        f"| catch-up of {data['measured']['items']:,} changes for 3 contexts, whole call"
        f" (p50 / p95 / max) | under {TARGET_MS:.0f} ms | {call['p50_ms']:.1f} /"
        f" {call['p95_ms']:.1f} / {call['max_ms']:.1f} ms | {verdict(ok)} |",
        f"| of which SQL round trips (p50) | | {data['measured']['sql_in_call']['p50_ms']:.1f} ms"
        f" ({len(plans['plans'])} statements) | |",
        f"| of which Python: decoding rows, building items, collecting garbage (p50) | |"
        f" {data['measured']['python_in_call_p50_ms']:.1f} ms | |",
        f"| garbage collection, average per call | | {gc_stats['per_call_ms']:.1f} ms"
        f" ({gc_stats['full_collections']} full collections in {data['repeat']} calls,"
        f" {gc_stats['full_collection_ms']:.0f} ms each over"
        f" {gc_stats['tracked_objects']:,} objects) | |",
        f"| SQL execution on the server (EXPLAIN ANALYZE, sum of the statements) | index only |"
        f" {plans['sql_execution_ms']:.1f} ms (+ {plans['sql_planning_ms']:.1f} ms planning);"
        f" {', '.join(plans['log_scans'])} | {verdict(plans['index_only'])} |",
        f"| first call after start (cache less warm) | | {data['measured']['first_call_ms']:.1f}"
        " ms | |",
        f"| same catch-up as a WebSocket subscribe reads it (one call per context, limit 500;"
        f" p50 / p95) | | {data['measured']['per_context_calls']['p50_ms']:.1f} /"
        f" {data['measured']['per_context_calls']['p95_ms']:.1f} ms | |",
        "",
        f"The log was {'built by this run' if log['built_at'] == 'this run' else 'reused'}"
        f" (a build takes {log['build_s']:.0f} s; `--rebuild` forces one). Plans of the route"
        " range reads and of the data_changes fetch (warm):",
        "",
        "```",
    ]
    for name, plan in plans["plans"].items():
        if name.startswith("route range") or name == "data_changes fetch":
            lines += [f"-- {name}", _ANY_LIST.sub(_any_list_short, plan["plan"]), ""]
    lines[-1:] = ["```", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 1,000,000-change log")
    parser.add_argument("--rows", type=int, help="log size (default 10,000,000)")
    parser.add_argument("--rebuild", action="store_true", help="build the log even if present")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    rows = args.rows or (QUICK_ROWS if args.quick else FULL_ROWS)

    started = time.perf_counter()
    name, url = log_database(args.quick)
    log_database_ready(name, url)
    log = log_built(url, rows)
    if log is None or args.rebuild:
        print(f"building a log of {rows:,} changes in {name}...", flush=True)
        log = log_build(url, rows)
    print(f"log: {log}", flush=True)

    picked = cursors_pick(url)
    _django_setup(url)
    # Other benchmarks may share the two cores: the load says how quiet the machine was.
    load_before = os.getloadavg()
    measured = measure(picked["cursors"], args.repeat, args.warmup)
    statements = measured.pop("statements")
    plans = explain(url, statements)
    data = {
        "quick": args.quick,
        "database": name,
        "log": log,
        "sizes": log_sizes(url),
        "cursors": picked["cursors"],
        "expected": picked["expected"],
        "repeat": args.repeat,
        "measured": measured,
        "explain": plans,
        "target_ms": TARGET_MS,
        "meets": measured["call"]["p95_ms"] < TARGET_MS and plans["index_only"],
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    path = result_write("catchup", data)
    summary = {k: v for k, v in data.items() if k != "explain"}
    print(path, summary, f"index only: {plans['index_only']} {plans['log_scans']}", sep="\n")


if __name__ == "__main__":
    main()
