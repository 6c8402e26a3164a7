"""Services of the change log: the live publisher step and its follow-up work, reset, retention."""

from __future__ import annotations

import datetime as dt
import logging
import secrets

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper

from changes.hooks import after_batch_run, after_fan_out_run, frames_filtered
from changes.models import AUDIENCE_PUBLIC, AUDIENCE_STAFF
from changes.publisher import (
    PUBLISHER_LOCK_KEY,
    PublishResult,
    change_batch_publish,
    change_log_state_ensure,
    frames_fan_out,
)
from common.db import rows_delete_in_batches

logger = logging.getLogger(__name__)

# The running totals from the tables themselves, per audience: one statement each for
# the yearly sums and the company counts, platform-wide and per industry.
_YEARLY_TOTALS_SQL = """
INSERT INTO aggregate_totals (scope, year, audience, total_tonnes, scope1_tonnes,
    scope2_tonnes, scope3_tonnes, reporting_companies, companies)
SELECT coalesce('industry:' || i.slug, 'platform'), er.year, %(audience)s,
       sum(er.total_tonnes), sum(er.scope1_tonnes), sum(er.scope2_tonnes),
       sum(er.scope3_tonnes), count(*), 0
  FROM emission_records er
  JOIN companies c ON c.id = er.company_id
  JOIN industries i ON i.id = c.industry_id
 WHERE %(staff)s OR (c.is_public AND er.verification_status <> 'rejected')
 GROUP BY GROUPING SETS ((i.slug, er.year), (er.year))
"""

_COMPANY_COUNTS_SQL = """
INSERT INTO aggregate_totals (scope, year, audience, total_tonnes, scope1_tonnes,
    scope2_tonnes, scope3_tonnes, reporting_companies, companies)
SELECT coalesce('industry:' || i.slug, 'platform'), NULL, %(audience)s, 0, 0, 0, 0, 0,
       count(*)
  FROM companies c
  JOIN industries i ON i.id = c.industry_id
 WHERE %(staff)s OR c.is_public
 GROUP BY GROUPING SETS ((i.slug), ())
"""


# Every company's latest non-rejected year and total, in one pass.
_COMPANY_LATEST_REBUILD_SQL = """
UPDATE companies c
   SET latest_year = l.year, latest_total_tonnes = l.total_tonnes
  FROM companies c2
  LEFT JOIN (SELECT DISTINCT ON (company_id) company_id, year, total_tonnes
               FROM emission_records
              WHERE verification_status <> 'rejected'
              ORDER BY company_id, year DESC) l ON l.company_id = c2.id
 WHERE c.id = c2.id
   AND (c.latest_year, c.latest_total_tonnes) IS DISTINCT FROM (l.year, l.total_tonnes)
"""


@transaction.atomic
def change_log_reset(*, reason: str) -> str:
    """Start a new epoch: empty the log, rebuild the running totals and the companies'
    latest totals from the tables.

    For bulk loads that bypassed capture. Clients holding the old epoch reload. Takes the
    publisher's advisory lock and an exclusive lock on the log, so no publisher runs and
    no writer captures until the new epoch is committed; writes captured after that are
    published on top of the rebuilt totals. Returns the new epoch.
    """
    epoch = secrets.token_hex(8)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PUBLISHER_LOCK_KEY])
        cursor.execute("LOCK TABLE data_changes IN ACCESS EXCLUSIVE MODE")
        cursor.execute("TRUNCATE data_changes, change_routes, context_heads, aggregate_totals")
        cursor.execute(_COMPANY_LATEST_REBUILD_SQL)
        for audience, staff in ((AUDIENCE_PUBLIC, False), (AUDIENCE_STAFF, True)):
            params = {"audience": audience, "staff": staff}
            cursor.execute(_YEARLY_TOTALS_SQL, params)
            cursor.execute(_COMPANY_COUNTS_SQL, params)
        change_log_state_ensure(cursor)
        # Seqs are never reused: the new epoch continues after the last seq handed out,
        # and every cursor at or below it is too old. A sequence that was never used
        # reports last_value 1 with is_called false: nothing was handed out, and its
        # first nextval (1) must still be above the head.
        cursor.execute(
            "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END"
            " FROM data_changes_seq_seq"
        )
        [last_used] = cursor.fetchone()
        cursor.execute(
            "UPDATE change_log_state SET epoch = %s, head_seq = greatest(head_seq, %s),"
            " pruned_through_seq = greatest(head_seq, %s), created_at = clock_timestamp()"
            " WHERE id = 1",
            [epoch, last_used, last_used],
        )
    logger.warning("change log reset to epoch %s: %s", epoch, reason)
    return epoch


def change_log_prune(*, older_than: dt.timedelta | None = None, batch: int | None = None) -> int:
    """Delete published changes older than the retention, in bounded batches.

    Seqs grow with publication time, so each batch removes a prefix of the log;
    `pruned_through_seq` records it so older cursors get `cursor_too_old`.
    Returns the number of changes deleted.
    """
    older_than = older_than or dt.timedelta(days=settings.CHANGE_RETENTION_DAYS)
    batch = batch or settings.CHANGE_PRUNE_BATCH

    def delete_batch(cursor: CursorWrapper) -> int:
        cursor.execute(
            "WITH doomed AS (SELECT id FROM data_changes WHERE processed_at IS NOT NULL"
            " AND processed_at < clock_timestamp() - %s ORDER BY processed_at LIMIT %s)"
            " DELETE FROM data_changes d USING doomed WHERE d.id = doomed.id RETURNING d.seq",
            [older_than, batch],
        )
        seqs = [row[0] for row in cursor.fetchall()]
        if seqs:
            through = max(seqs)
            cursor.execute("DELETE FROM change_routes WHERE seq <= %s", [through])
            cursor.execute(
                "UPDATE change_log_state SET pruned_through_seq ="
                " greatest(pruned_through_seq, %s) WHERE id = 1",
                [through],
            )
        return len(seqs)

    return rows_delete_in_batches(batch=batch, delete_batch=delete_batch)


def publish_and_schedule() -> PublishResult | None:
    """One publisher run plus its after-batch hooks (metrics, benchmark recomputes), for
    callers that fan the frames out themselves afterwards (tests, shells)."""
    result = change_batch_publish()
    after_batch_run(result, None)
    return result


async def publish_fan_out_schedule() -> PublishResult | None:
    """The live publisher step: publish one batch, send its frames, then run the hooks of
    what follows (changes/hooks.py: notifications, metrics, benchmark recomputes). None
    when another publisher holds the lock."""
    result = await sync_to_async(change_batch_publish, thread_sensitive=True)()
    sent = frames_filtered(result) if result is not None else []
    if sent:
        await frames_fan_out(sent)
    if result is not None:
        await after_fan_out_run(result)
    await sync_to_async(after_batch_run, thread_sensitive=True)(result, len(sent))
    return result
