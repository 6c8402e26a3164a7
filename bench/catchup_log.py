"""The published change log catch-up reads (bench/catchup.py): built with SQL alone in a
database of its own, kept between runs and reused while it holds a log of this shape."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg

from bench.common import BENCH_DB, manage, server_url

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
