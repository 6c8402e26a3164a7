"""Reads of the change log: its state, catch-up from per-context cursors, and the
publisher's backlog."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, connections

from changes.items import ChangeItem, change_item
from changes.models import AUDIENCE_BITS
from changes.publisher import (
    CLAIM_COLUMNS,
    captured_change_from_row,
    change_log_state_ensure,
    industry_slugs,
)
from changes.replica import (
    PRIMARY,
    REPLICA,
    REPLICA_ERRORS,
    read_counted,
    replica_failed,
    replica_state,
)

RESET_EPOCH_CHANGED = "epoch_changed"
RESET_CURSOR_INVALID = "cursor_invalid"
RESET_CURSOR_TOO_OLD = "cursor_too_old"
RESET_TOO_MANY_CHANGES = "too_many_changes"

# `pending` counts unpublished changes up to this many (on the partial index, so the
# count stays cheap in a 100,000-row bulk update); beyond it, `pending_capped` says so.
PENDING_COUNT_CAP = 100_000


@dataclass(frozen=True)
class LogState:
    """The change log's lineage and extent."""

    epoch: str
    head_seq: int
    pruned_through_seq: int
    last_published_at: dt.datetime | None


@dataclass
class ContextReset:
    """A context whose cursor cannot be served; the client reloads it from `seq`."""

    context: str
    reason: str


@dataclass
class CatchUp:
    """The answer of `changes_since`."""

    epoch: str
    head_seq: int
    items: list[ChangeItem] = field(default_factory=list)
    cursors: dict[str, int] = field(default_factory=dict)
    has_more: bool = False
    resets: list[ContextReset] = field(default_factory=list)


def change_log_state(*, using: str = PRIMARY) -> LogState:
    """Epoch, head and retained start, in one read (of the database `using`)."""
    if using != PRIMARY:
        return _replica_log_state(using)
    with connection.cursor() as cursor:
        for _ in range(2):
            cursor.execute(
                "SELECT epoch, head_seq, pruned_through_seq, last_published_at"
                " FROM change_log_state WHERE id = 1"
            )
            row = cursor.fetchone()
            if row is not None:
                return LogState(*row)
            change_log_state_ensure(cursor)
    raise RuntimeError("change_log_state could not be created")


def _replica_log_state(alias: str) -> LogState:
    # A replica is read-only: a row it does not have yet is not created there; head -1
    # makes it "behind" every cursor, so the primary answers.
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT epoch, head_seq, pruned_through_seq, last_published_at"
            " FROM change_log_state WHERE id = 1"
        )
        row = cursor.fetchone()
    return LogState(*row) if row is not None else LogState("", -1, 0, None)


def state_for_read(*, fresh_through: int = 0, epoch: str | None = None) -> tuple[str, LogState]:
    """The database a read-only snapshot or catch-up reads (an alias) and the log state
    read there first: the replica when it is usable and its head is at least
    `fresh_through` (and it is in `epoch`, when given), else the primary.

    Read the data after this state, on the same alias: the replica only moves forward,
    so every change at or below the state's head is in what is read next.
    """
    accept = None if epoch is None else (lambda state: state.epoch == epoch)
    state = replica_state(
        lambda alias: change_log_state(using=alias), fresh_through=fresh_through, accept=accept
    )
    if state is not None:
        return read_counted(REPLICA), state
    return read_counted(PRIMARY), change_log_state()


def seq_at(moment: dt.datetime) -> int:
    """The cursor for "changes published after `moment`" (on the database's clock)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT seq FROM data_changes WHERE processed_at <= %s AND seq IS NOT NULL"
            " ORDER BY processed_at DESC, seq DESC LIMIT 1",
            [moment],
        )
        row = cursor.fetchone()
    return row[0] if row else 0


def _missed_count(cursor, context: str, after: int, through: int, bit: int, cap: int) -> int:
    cursor.execute(
        "SELECT count(*) FROM (SELECT 1 FROM change_routes WHERE context = %s AND seq > %s"
        " AND seq <= %s AND audiences & %s <> 0 LIMIT %s) AS missed",
        [context, after, through, bit, cap],
    )
    return cursor.fetchone()[0]


def changes_since(
    *,
    cursors: dict[str, int],
    audience: str,
    limit: int,
    epoch: str | None = None,
    fresh_through: int = 0,
) -> CatchUp:
    """Every item after each context's cursor that `audience` may see, in seq order.

    Cursors are per context. A page holds at most `limit` items but never splits the
    items of one seq; `cursors` are where to continue. A cursor above the head, below
    the retained log, from another epoch, or missing more than CATCHUP_MAX_CHANGES
    changes yields a reset for its context instead.

    Read from the replica when its head reaches every cursor and `fresh_through` (the
    newest seq the caller knows was published), else from the primary; a replica that
    fails during the read is left and the primary answers.
    """
    fresh_through = max([fresh_through, *cursors.values()])
    alias, state = state_for_read(fresh_through=fresh_through, epoch=epoch)
    if alias == REPLICA:
        try:
            return _changes_since(alias, state, cursors, audience, limit, epoch)
        except REPLICA_ERRORS as exc:
            replica_failed(exc)
            alias, state = read_counted(PRIMARY), change_log_state()
    return _changes_since(alias, state, cursors, audience, limit, epoch)


def _changes_since(
    alias: str,
    state: LogState,
    cursors: dict[str, int],
    audience: str,
    limit: int,
    epoch: str | None,
) -> CatchUp:
    result = CatchUp(epoch=state.epoch, head_seq=state.head_seq)
    bit = AUDIENCE_BITS[audience]
    if epoch is not None and epoch != state.epoch:
        result.resets = [ContextReset(context, RESET_EPOCH_CHANGED) for context in cursors]
        result.cursors = dict.fromkeys(cursors, state.head_seq)
        return result

    with connections[alias].cursor() as cursor:
        wanted: dict[str, int] = {}
        for context, cursor_seq in cursors.items():
            reason = None
            if cursor_seq > state.head_seq or cursor_seq < 0:
                reason = RESET_CURSOR_INVALID
            elif cursor_seq < state.pruned_through_seq:
                reason = RESET_CURSOR_TOO_OLD
            elif (
                _missed_count(
                    cursor,
                    context,
                    cursor_seq,
                    state.head_seq,
                    bit,
                    settings.CATCHUP_MAX_CHANGES + 1,
                )
                > settings.CATCHUP_MAX_CHANGES
            ):
                reason = RESET_TOO_MANY_CHANGES
            if reason:
                result.resets.append(ContextReset(context, reason))
                result.cursors[context] = state.head_seq
            else:
                wanted[context] = cursor_seq

        routes: list[tuple[int, str]] = []
        truncated = False
        for context, cursor_seq in wanted.items():
            cursor.execute(
                "SELECT seq FROM change_routes WHERE context = %s AND seq > %s AND seq <= %s"
                " AND audiences & %s <> 0 ORDER BY seq LIMIT %s",
                [context, cursor_seq, state.head_seq, bit, limit + 1],
            )
            seqs = [row[0] for row in cursor.fetchall()]
            truncated = truncated or len(seqs) > limit
            routes.extend((seq, context) for seq in seqs[:limit])
        routes.sort()

        # Cut the page after `limit` items, but finish the seq it stopped in; every
        # context is then complete up to `boundary`.
        boundary = state.head_seq
        if len(routes) > limit or truncated:
            cut = min(limit, len(routes))
            last_seq = routes[cut - 1][0]
            while cut < len(routes) and routes[cut][0] == last_seq:
                cut += 1
            routes = routes[:cut]
            boundary = last_seq
            result.has_more = True
            if truncated:
                # A context cut at `limit` is only complete up to its own last seq.
                boundary = min(boundary, _complete_through(routes, wanted, limit))
                routes = [route for route in routes if route[0] <= boundary]

        if routes:
            cursor.execute(
                f"SELECT {CLAIM_COLUMNS}, seq, significance, contexts, audience"
                " FROM data_changes WHERE seq = ANY(%s)",
                [sorted({seq for seq, _ in routes})],
            )
            changes = {}
            for row in cursor.fetchall():
                change = captured_change_from_row(row[:10], exact=False)
                change.seq, change.significance = row[10], row[11]
                change.contexts, change.audience = list(row[12] or []), row[13]
                changes[change.seq] = change
            slugs = industry_slugs()
            for seq, context in routes:
                change = changes.get(seq)
                if change is None:
                    continue
                # Only the item asked for: a change has one per context and audience.
                item = change_item(change, context, audience, slugs)
                if item is not None:
                    result.items.append(item)
        for context in wanted:
            result.cursors[context] = boundary
    return result


def _complete_through(routes: list[tuple[int, str]], wanted: dict[str, int], limit: int) -> int:
    """The highest seq up to which every context's fetched routes are complete."""
    per_context: dict[str, list[int]] = {}
    for seq, context in routes:
        per_context.setdefault(context, []).append(seq)
    bound = None
    for seqs in per_context.values():
        if len(seqs) >= limit:
            bound = seqs[-1] if bound is None else min(bound, seqs[-1])
    return bound if bound is not None else max((seq for seq, _ in routes), default=0)


# How many of a context's newest routes the recent-changes feed reads to find its items.
# `overview` gets an `aggregate` item with most batches (totals moved), which is not news
# for a feed; 2,000 routes hold enough news at the demo's and the benchmarks' rates while
# keeping the read one short backward scan of the (context, seq) primary key.
RECENT_SCAN_ROUTES = 2000


def recent_changes(
    *,
    context: str,
    audience: str,
    limit: int,
    exclude_entities: tuple[str, ...] = ("aggregate",),
    using: str = PRIMARY,
) -> list[ChangeItem]:
    """The newest items of one context that `audience` may see, newest first (for a
    recent-changes feed), leaving out `exclude_entities`; read from the database
    `using` (see state_for_read)."""
    bit = AUDIENCE_BITS[audience]
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join('d.' + c.strip() for c in CLAIM_COLUMNS.split(','))},"
            " d.seq, d.significance, d.contexts, d.audience"
            " FROM (SELECT seq FROM change_routes WHERE context = %s AND audiences & %s <> 0"
            " ORDER BY seq DESC LIMIT %s) AS r JOIN data_changes d ON d.seq = r.seq"
            " WHERE NOT (d.entity = ANY(%s)) ORDER BY d.seq DESC LIMIT %s",
            [context, bit, RECENT_SCAN_ROUTES, list(exclude_entities), limit],
        )
        rows = cursor.fetchall()
    slugs = industry_slugs()
    items: list[ChangeItem] = []
    for row in rows:
        change = captured_change_from_row(row[:10], exact=False)
        change.seq, change.significance = row[10], row[11]
        change.contexts, change.audience = list(row[12] or []), row[13]
        item = change_item(change, context, audience, slugs)
        if item is not None:
            items.append(item)
    return items


def aggregates_current(*, audience: str) -> dict[str, dict]:
    """The running totals for one audience, keyed by aggregate id."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT scope, year, total_tonnes, scope1_tonnes, scope2_tonnes, scope3_tonnes,"
            " reporting_companies, companies FROM aggregate_totals WHERE audience = %s",
            [audience],
        )
        out = {}
        for scope, year, total, s1, s2, s3, reporting, companies in cursor.fetchall():
            key = scope if year is None else f"{scope}:{year}"
            if year is None:
                out[key] = {"scope": scope, "year": None, "companies": companies}
            else:
                out[key] = {
                    "scope": scope,
                    "year": year,
                    "total_tonnes": total,
                    "scope1_tonnes": s1,
                    "scope2_tonnes": s2,
                    "scope3_tonnes": s3,
                    "reporting_companies": reporting,
                }
        return out


@dataclass(frozen=True)
class Backlog:
    """What waits for the publisher."""

    pending: int
    capped: bool
    lag_ms: int


def publisher_backlog(*, cap: int = PENDING_COUNT_CAP) -> Backlog:
    """Unpublished changes (counted up to `cap`) and the age of the oldest, in one query
    on the partial index of unprocessed rows, on the database's clock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM data_changes"
            " WHERE processed_at IS NULL LIMIT %s) AS waiting),"
            " (SELECT greatest(0, extract(epoch FROM clock_timestamp() - created_at) * 1000)"
            " FROM data_changes WHERE processed_at IS NULL ORDER BY capture_id LIMIT 1)",
            [cap + 1],
        )
        pending, lag = cursor.fetchone()
    return Backlog(pending=min(pending, cap), capped=pending > cap, lag_ms=int(lag or 0))
