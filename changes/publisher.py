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

The running totals are changes/aggregate_totals.py's, the frames changes/frames.py's.
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

from changes.aggregate_totals import aggregate_change, aggregates_apply
from changes.aggregates import AggregateDeltas
from changes.frames import Frame, frames_build
from changes.hooks import Batch, batch_read_run, batch_write_run, frames_send
from changes.items import (
    CapturedChange,
    ChangeItem,
    change_contexts,
    change_items,
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
        moved = aggregates_apply(cursor, deltas.moved())
        aggregates = [aggregate_change(key, before, after, now) for key, before, after in moved]
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
        frames = frames_build(cursor, routed, settings.PUBLISHER_FRAME_MAX_ITEMS)

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
