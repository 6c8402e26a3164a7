"""The publisher: captured changes to ordered, routed, redacted batches.

`change_batch_publish()` does the database half in one transaction holding a
transaction-scoped advisory lock, so any number of publishers may run and exactly one
publishes at a time: it claims the committed, unprocessed changes in capture order,
assigns each its `seq`, scores its significance, derives its contexts, moves the
running totals (emitting `aggregate` items for the totals that moved), records the
routes and each context's head, marks the changes processed and commits. Only then does
`frames_fan_out()` send one group message per context and audience, each frame carrying
`prev_seq` so a receiver that missed one notices and repairs the gap from the log.

A publisher killed before its commit loses nothing: the claim rolls back with it and
the next run publishes the same changes.

What the apps above do with a batch (notifications, the maintenance switch, benchmark
recomputes, metrics, the fan-out itself) they register on changes/hooks.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction

from changes.aggregates import PLATFORM, AggregateDeltas, AggregateKey
from changes.contexts import OVERVIEW, industry_context
from changes.hooks import Batch, batch_read_run, batch_write_run, frames_send
from changes.items import (
    BatchMessage,
    CapturedChange,
    ChangeItem,
    change_contexts,
    change_items,
    items_coalesce,
)
from changes.models import AUDIENCE_BITS
from changes.significance import change_significance, significance_rules
from common.json import json_dumps, json_loads

logger = logging.getLogger(__name__)

# pg_advisory_xact_lock key of the publisher ("carbonpb" as an int64).
PUBLISHER_LOCK_KEY = 0x636172626F6E7062

CLAIM_COLUMNS = (
    "id, capture_id, table_name, entity, record_id, change_type, changed_columns,"
    " change_data, routing, created_at"
)


@dataclass
class Frame:
    """One group message: part of a batch for one context and audience."""

    context: str
    audience: str
    seq_from: int
    seq_to: int
    prev_seq: int
    message: BatchMessage
    # Its items before coalescing (one per change routed to the context): what a
    # catch-up through it counts against CATCHUP_MAX_CHANGES.
    routed: int = 0


@dataclass
class PublishResult:
    """What one run of the publisher did."""

    changes: int = 0
    seq_from: int = 0
    seq_to: int = 0
    has_more: bool = False
    lag_ms: float = 0.0
    frames: list[Frame] = field(default_factory=list)
    # Industries (ids) whose emission records changed: their benchmarks are due.
    industries_touched: set[str] = field(default_factory=set)
    # What the apps' batch hooks returned, by hook name (changes/hooks.py): the
    # notifications the batch created, whether maintenance was on.
    extras: dict[str, Any] = field(default_factory=dict)


def captured_change_from_row(row: tuple, *, exact: bool = True) -> CapturedChange:
    """A claimed or logged `data_changes` row (CLAIM_COLUMNS order) as a CapturedChange.

    `exact` parses numbers with decimals as Decimal: the publisher sums them into running
    totals. Reading for delivery only (catch-up) parses them as floats with orjson, several
    times faster; a float prints the same digits for these three-decimal values.
    """
    loads = json_loads if exact else orjson.loads
    return CapturedChange(
        id=row[0],
        capture_id=row[1],
        table_name=row[2],
        entity=row[3],
        record_id=row[4],
        change_type=row[5],
        changed_columns=list(row[6] or []),
        change_data=loads(row[7]) if row[7] else {},
        routing=loads(row[8]) if row[8] else {},
        created_at=row[9],
    )


def industry_slugs() -> dict[str, str]:
    """industry id (as text) to slug; thirty-odd rows, read once per batch."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id::text, slug FROM industries")
        return dict(cursor.fetchall())


def change_log_state_ensure(cursor) -> None:
    """Create the log's state row (with a first epoch) if it is missing: a database
    emptied table by table (a test run, a restore of the domain tables) starts a new
    lineage rather than failing."""
    cursor.execute(
        "INSERT INTO change_log_state (id, epoch, head_seq, pruned_through_seq)"
        " VALUES (1, md5(random()::text || clock_timestamp()::text), 0, 0)"
        " ON CONFLICT (id) DO NOTHING"
    )


def _next_seqs(cursor, count: int) -> list[int]:
    if count == 0:
        return []
    cursor.execute("SELECT nextval('data_changes_seq_seq') FROM generate_series(1, %s)", [count])
    return sorted(row[0] for row in cursor.fetchall())


def _top_thresholds(cursor, rank: int):
    cache: dict[int, Decimal | None] = {}

    def threshold(year: int) -> Decimal | None:
        if year not in cache:
            cursor.execute(
                "SELECT total_tonnes FROM emission_records WHERE year = %s"
                " ORDER BY total_tonnes DESC OFFSET %s LIMIT 1",
                [year, rank - 1],
            )
            row = cursor.fetchone()
            cache[year] = row[0] if row else None
        return cache[year]

    return threshold


def _aggregate_contexts(scope: str) -> list[str]:
    if scope == PLATFORM:
        return [OVERVIEW]
    return [OVERVIEW, industry_context(scope.removeprefix("industry:"))]


def _aggregate_id(scope: str, year: int | None) -> str:
    return scope if year is None else f"{scope}:{year}"


def _aggregates_apply(cursor, moved: dict[AggregateKey, dict[str, Decimal]]) -> list[tuple]:
    """Add the deltas to aggregate_totals; returns (key, before, after) for each."""
    if not moved:
        return []
    keys = sorted(moved, key=lambda key: (key[0], key[1] is None, key[1] or 0, key[2]))
    measures = ("total_tonnes", "scope1_tonnes", "scope2_tonnes", "scope3_tonnes")
    counters = ("reporting_companies", "companies")
    rows = [
        (
            scope,
            year,
            audience,
            *[moved[(scope, year, audience)].get(m, Decimal(0)) for m in measures],
            *[int(moved[(scope, year, audience)].get(c, 0)) for c in counters],
        )
        for scope, year, audience in keys
    ]
    columns = list(zip(*rows, strict=True))
    # One statement for every moved total (sorted keys: upserts lock rows in one order).
    cursor.execute(
        """
        INSERT INTO aggregate_totals AS a (scope, year, audience, total_tonnes, scope1_tonnes,
            scope2_tonnes, scope3_tonnes, reporting_companies, companies)
        SELECT * FROM unnest(%s::text[], %s::int[], %s::text[], %s::numeric[], %s::numeric[],
            %s::numeric[], %s::numeric[], %s::int[], %s::int[])
        ON CONFLICT (scope, year, audience) DO UPDATE SET
            total_tonnes = a.total_tonnes + EXCLUDED.total_tonnes,
            scope1_tonnes = a.scope1_tonnes + EXCLUDED.scope1_tonnes,
            scope2_tonnes = a.scope2_tonnes + EXCLUDED.scope2_tonnes,
            scope3_tonnes = a.scope3_tonnes + EXCLUDED.scope3_tonnes,
            reporting_companies = a.reporting_companies + EXCLUDED.reporting_companies,
            companies = a.companies + EXCLUDED.companies
        RETURNING scope, year, audience, total_tonnes, scope1_tonnes, scope2_tonnes,
            scope3_tonnes, reporting_companies, companies
        """,
        [list(column) for column in columns],
    )
    after_by_key = {
        (row[0], row[1], row[2]): dict(zip((*measures, *counters), row[3:], strict=True))
        for row in cursor.fetchall()
    }
    results = []
    for key in keys:
        after = after_by_key[key]
        delta = moved[key]
        before = {name: after[name] - delta.get(name, 0) for name in after}
        results.append((key, before, after))
    return results


def _aggregate_change(key: AggregateKey, before: dict, after: dict, at) -> CapturedChange:
    scope, year, audience = key
    if year is None:
        names = ["companies"]
    else:
        names = ["total_tonnes", "scope1_tonnes", "scope2_tonnes", "scope3_tonnes"]
        names.append("reporting_companies")
    changed = [name for name in names if before[name] != after[name]]
    return CapturedChange(
        id=None,
        capture_id=0,
        table_name="aggregate_totals",
        entity="aggregate",
        record_id=_aggregate_id(scope, year),
        change_type="update",
        changed_columns=changed,
        change_data={
            "old": {name: before[name] for name in changed},
            "new": {"scope": scope, "year": year, **{name: after[name] for name in names}},
        },
        routing={},
        created_at=at,
        significance="minor",
        audience=audience,
        contexts=_aggregate_contexts(scope),
    )


def _frames_build(
    cursor, routed: dict[tuple[str, str], list[ChangeItem]], frame_size: int
) -> list[Frame]:
    """Split each context's items into frames chained by prev_seq; store the new heads."""
    if not routed:
        return []
    keys = sorted(routed)
    cursor.execute(
        "SELECT context, audience, last_seq FROM context_heads"
        " WHERE (context, audience) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        " FOR UPDATE",
        [[k[0] for k in keys], [k[1] for k in keys]],
    )
    heads = {(c, a): seq for c, a, seq in cursor.fetchall()}
    frames: list[Frame] = []
    new_heads: list[tuple[str, str, int]] = []
    for key in keys:
        context, audience = key
        items = routed[key]
        prev_seq = heads.get(key, 0)
        for start in range(0, len(items), frame_size):
            chunk = items[start : start + frame_size]
            seq_from, seq_to = chunk[0]["seq"], chunk[-1]["seq"]
            message: BatchMessage = {
                "type": "batch",
                "context": context,
                "seq_from": seq_from,
                "seq_to": seq_to,
                "prev_seq": prev_seq,
                "changes": items_coalesce(chunk),
            }
            frames.append(Frame(context, audience, seq_from, seq_to, prev_seq, message, len(chunk)))
            prev_seq = seq_to
        new_heads.append((context, audience, prev_seq))
    cursor.execute(
        "INSERT INTO context_heads (context, audience, last_seq)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[])"
        " ON CONFLICT (context, audience) DO UPDATE SET last_seq = EXCLUDED.last_seq",
        [[h[0] for h in new_heads], [h[1] for h in new_heads], [h[2] for h in new_heads]],
    )
    return frames


@transaction.atomic
def change_batch_publish(*, limit: int | None = None) -> PublishResult | None:
    """Publish one batch of captured changes. Returns None when another publisher holds
    the lock. Takes the publisher's transaction-scoped advisory lock itself."""
    limit = limit or settings.PUBLISHER_CLAIM_LIMIT
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [PUBLISHER_LOCK_KEY])
        if not cursor.fetchone()[0]:
            return None
        cursor.execute(
            f"SELECT {CLAIM_COLUMNS} FROM data_changes WHERE processed_at IS NULL"
            " ORDER BY capture_id LIMIT %s",
            [limit + 1],
        )
        rows = cursor.fetchall()
        has_more = len(rows) > limit
        changes = [captured_change_from_row(row) for row in rows[:limit]]
        if not changes:
            return PublishResult()
        slugs = industry_slugs()
        rules = significance_rules()
        threshold = _top_thresholds(cursor, rules["top_rank"])
        deltas = AggregateDeltas(slugs)
        for change, seq in zip(changes, _next_seqs(cursor, len(changes)), strict=True):
            change.seq = seq
            change.significance = change_significance(change, rules=rules, top_threshold=threshold)
            change.contexts = change_contexts(change, slugs)
            deltas.add_change(change)

        # Derived data moves with the changes that moved it: the companies' latest totals.
        companies = sorted(
            {
                str(company_id)
                for c in changes
                if c.entity == "emission_record"
                for company_id in (
                    c.routing.get("company_id"),
                    c.change_data.get("old", {}).get("company_id"),
                )
                if company_id
            }
        )
        # The apps' reads of the state as it was, before the batch moves anything.
        batch = Batch(cursor=cursor, changes=changes, slugs=slugs)
        batch_read_run(batch)
        if companies:
            cursor.execute("SELECT company_latest_refresh(%s::uuid[])", [companies])

        cursor.execute("SELECT clock_timestamp()")
        now = cursor.fetchone()[0]
        moved = _aggregates_apply(cursor, deltas.moved())
        aggregates = [_aggregate_change(key, before, after, now) for key, before, after in moved]
        for change, seq in zip(aggregates, _next_seqs(cursor, len(aggregates)), strict=True):
            change.seq = seq

        cursor.execute(
            "UPDATE data_changes d SET seq = x.seq, processed_at = %s, significance = x.sig,"
            " contexts = ARRAY(SELECT jsonb_array_elements_text(x.ctx))"
            " FROM unnest(%s::uuid[], %s::bigint[], %s::jsonb[], %s::text[])"
            " AS x(id, seq, ctx, sig) WHERE d.id = x.id",
            [
                now,
                [c.id for c in changes],
                [c.seq for c in changes],
                [json_dumps(c.contexts) for c in changes],
                [c.significance for c in changes],
            ],
        )
        if aggregates:
            cursor.execute(
                "INSERT INTO data_changes (capture_id, table_name, entity, record_id,"
                " change_type, changed_columns, change_data, routing, created_at, processed_at,"
                " seq, contexts, significance, audience)"
                " SELECT 0, 'aggregate_totals', 'aggregate', x.rid, 'update',"
                " ARRAY(SELECT jsonb_array_elements_text(x.changed)), x.data, '{}'::jsonb,"
                " %s, %s, x.seq, ARRAY(SELECT jsonb_array_elements_text(x.ctx)), 'minor',"
                " x.audience"
                " FROM unnest(%s::text[], %s::jsonb[], %s::jsonb[], %s::bigint[], %s::jsonb[],"
                " %s::text[]) AS x(rid, changed, data, seq, ctx, audience)",
                [
                    now,
                    now,
                    [a.record_id for a in aggregates],
                    [json_dumps(a.changed_columns) for a in aggregates],
                    [json_dumps(a.change_data) for a in aggregates],
                    [a.seq for a in aggregates],
                    [json_dumps(a.contexts) for a in aggregates],
                    [a.audience for a in aggregates],
                ],
            )

        routed: dict[tuple[str, str], list[ChangeItem]] = {}
        routes: dict[tuple[str, int], int] = {}
        for change in [*changes, *aggregates]:
            for (context, audience), item in change_items(change, slugs).items():
                routed.setdefault((context, audience), []).append(item)
                routes[(context, change.seq)] = (
                    routes.get((context, change.seq), 0) | (AUDIENCE_BITS[audience])
                )
        if routes:
            cursor.execute(
                "INSERT INTO change_routes (context, seq, audiences)"
                " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::smallint[])",
                [[k[0] for k in routes], [k[1] for k in routes], list(routes.values())],
            )
        for items in routed.values():
            items.sort(key=lambda item: item["seq"])
        frames = _frames_build(cursor, routed, settings.PUBLISHER_FRAME_MAX_ITEMS)

        batch.now, batch.aggregates = now, aggregates
        batch_write_run(batch)
        seq_to = max(c.seq for c in [*changes, *aggregates])
        change_log_state_ensure(cursor)
        cursor.execute(
            "UPDATE change_log_state SET head_seq = %s, last_published_at = %s WHERE id = 1",
            [seq_to, now],
        )
        oldest = min(c.created_at for c in changes)
        touched = {
            str(c.routing.get("industry_id"))
            for c in changes
            if c.entity == "emission_record" and c.routing.get("industry_id")
        }
        return PublishResult(
            industries_touched=touched,
            changes=len(changes),
            seq_from=changes[0].seq,
            seq_to=seq_to,
            has_more=has_more,
            lag_ms=(now - oldest).total_seconds() * 1000,
            frames=frames,
            extras=batch.extras,
        )


def changes_pending() -> bool:
    """Whether anything waits to be published: one probe of the partial index."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM data_changes WHERE processed_at IS NULL)")
        return cursor.fetchone()[0]


async def frames_fan_out(frames: list[Frame]) -> None:
    """Send each frame to its context group, once, after the batch committed (by the
    registered sender: realtime's broadcast)."""
    await frames_send(frames)
