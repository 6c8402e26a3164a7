"""Writes of notifications: creating them (the publisher's batch, staff announcements),
sending them, recording attempts and acknowledgements, pruning."""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
import uuid
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from limits import parse as parse_rate
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter

from changes.contexts import SYSTEM, InvalidContext, context_normalize
from changes.items import CapturedChange
from changes.selectors import change_log_state
from common.audit import BROADCAST, audit
from common.errors import ApplicationError, InvalidParameter, NotFound
from common.json import json_dumps
from emissions.access import contexts_authorize
from notifications.messages import (
    Delivery,
    delivery,
    notification_message,
    notification_row_delivery,
)
from notifications.models import (
    BODY_MAX_LENGTH,
    TITLE_MAX_LENGTH,
    NotificationAudience,
    NotificationType,
    UpdateNotification,
)
from notifications.rules import (
    DATA_QUALITY,
    NEW_COMPANY,
    PUBLIC,
    RANKING_CHANGE,
    STAFF,
    TOTAL_MOVE,
    VERIFICATION_CHANGE,
    Candidate,
    RankedCompany,
    candidates_cap,
    change_candidates,
    notify_rules,
    ranking_candidates,
)
from notifications.selectors import notification_id_parse, notification_visible
from notifications.signals import notifications_created

logger = logging.getLogger(__name__)

# The control action every server process's sessions receive notifications by.
NOTIFICATION_ACTION = "notification"
# Redis calls of the broadcast rate limiter give up after this long, and the broadcast
# goes through: an emergency announcement must not fail because Redis is slow.
BROADCAST_RATE_TIMEOUT_S = 0.5


class NotificationNotFound(NotFound):
    """A notification id that names nothing this client may see."""

    def __init__(self) -> None:
        super().__init__("No such notification.")


class NotificationIdInvalid(ApplicationError):
    """A string that cannot be a notification id."""

    code = "invalid_request"

    def __init__(self) -> None:
        super().__init__("`notification` is a notification id (a UUID).")


def _ttl() -> dt.timedelta:
    return dt.timedelta(hours=settings.NOTIFY_TTL_HOURS)


def _title(text: str) -> str:
    return text if len(text) <= TITLE_MAX_LENGTH else text[: TITLE_MAX_LENGTH - 1] + "…"


def _tonnes(value: Any) -> str:
    return f"{Decimal(str(value)):,.0f} t CO2e"


def _plain(value: Any) -> str:
    """A number as people write it: 25, 12.5 (not 25.00 or 2.5E+1)."""
    return f"{Decimal(str(value)).normalize():f}"


# -- created by the publisher ---------------------------------------------------------------


def _ranking_industries(changes: list[CapturedChange]) -> list[str]:
    """Industries whose ranking the batch may move: those of its emission record changes
    (a company's latest total moves only with its records)."""
    industries = {
        str(change.routing[key])
        for change in changes
        if change.entity == "emission_record"
        for key in ("industry_id", "old_industry_id")
        if change.routing.get(key)
    }
    return sorted(industries)


def _ranking_read(cursor, industry_ids: list[str], top_n: int) -> dict[str, list[RankedCompany]]:
    """Each industry's top N public companies by latest total (the directory's ordering,
    by the companies_industry_total_sort index): one statement for every industry."""
    cursor.execute(
        "SELECT x.industry_id::text, c.id::text, c.name, c.latest_total_tonnes, c.latest_year"
        " FROM unnest(%s::uuid[]) AS x(industry_id) CROSS JOIN LATERAL ("
        "   SELECT id, name, latest_total_tonnes, latest_year FROM companies"
        "    WHERE industry_id = x.industry_id AND is_public AND latest_total_tonnes IS NOT NULL"
        "    ORDER BY COALESCE(latest_total_tonnes, -1) DESC, id DESC LIMIT %s) c",
        [industry_ids, top_n],
    )
    ranking: dict[str, list[RankedCompany]] = {industry: [] for industry in industry_ids}
    for industry_id, company_id, name, total, year in cursor.fetchall():
        ranking[industry_id].append(RankedCompany(company_id, name, total, year))
    return ranking


def batch_ranking_before(cursor, *, changes: list[CapturedChange]) -> dict | None:
    """The publisher calls this before it moves the companies' latest totals: the top N of
    every industry the batch touches, as they were. None when the rule is off."""
    if not settings.NOTIFY_ENABLED:
        return None
    top_n = int(notify_rules()["rank_top_n"] or 0)
    industries = _ranking_industries(changes)
    if top_n <= 0 or not industries:
        return None
    return {
        "top_n": top_n,
        "industries": industries,
        "before": _ranking_read(cursor, industries, top_n),
    }


def _names(cursor, company_ids: list[str], slugs: list[str]) -> tuple[dict, dict]:
    """Company (name, is_public) by id, and industry name by slug."""
    companies: dict[str, tuple[str, bool]] = {}
    industries: dict[str, str] = {}
    if company_ids:
        cursor.execute(
            "SELECT id::text, name, is_public FROM companies WHERE id = ANY(%s::uuid[])",
            [company_ids],
        )
        companies = {row[0]: (row[1], row[2]) for row in cursor.fetchall()}
    if slugs:
        cursor.execute("SELECT slug, name FROM industries WHERE slug = ANY(%s)", [slugs])
        industries = dict(cursor.fetchall())
    return companies, industries


def _texts(candidate: Candidate, company: str, industry: str) -> tuple[str, str]:
    """Title and body: facts only, nothing the notification's audience may not read."""
    data = candidate.payload
    kind = candidate.notification_type
    if kind == TOTAL_MOVE:
        before, after, year = data["previous_total_tonnes"], data["total_tonnes"], data["year"]
        direction = "up" if after > before else "down"
        if data["change_pct"] is None:
            title = f"{company}: {year} emissions up from zero"
        else:
            title = f"{company}: {year} emissions {direction} {data['change_pct']:g}%"
        body = f"Total emissions for {year} moved from {_tonnes(before)} to {_tonnes(after)}."
        return title, body
    if kind == VERIFICATION_CHANGE:
        status = data["status"]
        if "year" in data:
            title = f"{company}: {data['year']} emissions {status}"
            body = f"The {data['year']} emission figures are now {status}"
        else:
            title = f"{company} is now {status}"
            body = f"The company's verification status is now {status}"
        previous = data.get("previous_status")
        return title, body + (f" (was {previous})." if previous else ".")
    if kind == DATA_QUALITY:
        before, after = data["previous_score"], data["score"]
        direction = "up" if after > before else "down"
        title = f"{company}: data quality {direction} {_plain(abs(after - before))} points"
        return title, f"The data-quality score moved from {_plain(before)} to {_plain(after)}."
    if kind == NEW_COMPANY:
        country = f" ({data['country']})" if data.get("country") else ""
        return f"New company in {industry}: {company}", f"{company}{country} joined {industry}."
    if kind == RANKING_CHANGE:
        top_n = notify_rules()["rank_top_n"]
        if data["movement"] == "entered":
            title = f"{company} entered the top {top_n} in {industry}"
            year = f" ({data['year']})" if data.get("year") else ""
            body = (
                f"Now #{data['rank']} by latest reported emissions: "
                f"{_tonnes(data['total_tonnes'])}{year}."
            )
        else:
            title = f"{company} left the top {top_n} in {industry}"
            body = f"No longer among the {top_n} largest reported emitters of {industry}."
        return title, body
    raise ValueError(f"no text for {kind!r}")


def batch_notifications_create(
    cursor,
    *,
    changes: list[CapturedChange],
    slugs: dict[str, str],
    ranking: dict | None,
    now: dt.datetime,
) -> list[Delivery]:
    """Create the notifications one published batch deserves, in the publisher's
    transaction (so they exist exactly when the batch does); returns what to send once it
    committed. The publisher calls this after it assigned seqs and moved the companies'
    latest totals; a batch that deserves nothing costs no query."""
    if not settings.NOTIFY_ENABLED:
        return []
    rules = notify_rules()
    candidates = change_candidates(changes, rules=rules, slugs=slugs)
    if ranking is not None:
        after = _ranking_read(cursor, ranking["industries"], ranking["top_n"])
        candidates.extend(
            ranking_candidates(
                changes,
                before=ranking["before"],
                after=after,
                slugs=slugs,
                top_n=ranking["top_n"],
            )
        )
    if not candidates:
        return []
    kept = candidates_cap(candidates, settings.NOTIFY_MAX_PER_BATCH)
    if len(kept) < len(candidates):
        logger.info(
            "batch %s-%s: %d notifications kept of %d (NOTIFY_MAX_PER_BATCH)",
            changes[0].seq,
            changes[-1].seq,
            len(kept),
            len(candidates),
        )
    industry_slugs = sorted(
        {c.context.removeprefix("industry:") for c in kept if c.context.startswith("industry:")}
    )
    companies, industries = _names(cursor, sorted({c.company_id for c in kept}), industry_slugs)
    ack_levels = set(rules["ack_levels"])
    expires = now + _ttl()
    rows, out = [], []
    for candidate in kept:
        name, is_public = companies.get(candidate.company_id, (None, True))
        if candidate.notification_type == RANKING_CHANGE:
            # A company that left the public ranking because it was hidden is staff news;
            # one deleted meanwhile keeps the name it was ranked under.
            name = name or candidate.payload["name"]
            audience = PUBLIC if is_public else STAFF
        elif candidate.notification_type == NEW_COMPANY:
            name = candidate.payload.get("name") or name
            audience = candidate.audience
        else:
            audience = candidate.audience
        if name is None:
            continue  # deleted in the same batch: nothing left to tell
        industry = industries.get(candidate.context.removeprefix("industry:"), "")
        title, body = _texts(candidate, name, industry)
        message = notification_message(
            id=str(uuid.uuid4()),
            level=candidate.level,
            title=_title(title),
            body=body[:BODY_MAX_LENGTH],
            context=candidate.context,
            seq=candidate.change.seq,
            requires_ack=candidate.level in ack_levels,
            kind=candidate.notification_type,
            data=candidate.payload,
            created_at=now,
            expires_at=expires,
        )
        rows.append((message, candidate.change.id, audience))
        out.append(delivery(message, audience=audience, targets=[], expires_at=expires))
    if not rows:
        return []
    cursor.execute(
        "INSERT INTO update_notifications (id, change_id, target_sessions, notification_type,"
        " payload, delivery_attempts, level, title, body, context, seq, audience, requires_ack,"
        " created_at, expires_at)"
        " SELECT x.id, x.change_id, '{}', x.kind, x.payload, 0, x.level, x.title, x.body,"
        " x.context, x.seq, x.audience, x.ack, %s, %s"
        " FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::jsonb[], %s::text[], %s::text[],"
        " %s::text[], %s::text[], %s::bigint[], %s::text[], %s::bool[])"
        " AS x(id, change_id, kind, payload, level, title, body, context, seq, audience, ack)",
        [
            now,
            expires,
            [m["id"] for m, _, _ in rows],
            [str(change_id) for _, change_id, _ in rows],
            [m["kind"] for m, _, _ in rows],
            [json_dumps(m["data"]) for m, _, _ in rows],
            [m["level"] for m, _, _ in rows],
            [m["title"] for m, _, _ in rows],
            [m["body"] for m, _, _ in rows],
            [m["context"] for m, _, _ in rows],
            [m["seq"] for m, _, _ in rows],
            [audience for _, _, audience in rows],
            [m["requires_ack"] for m, _, _ in rows],
        ],
    )
    return out


# -- sending --------------------------------------------------------------------------------


def notifications_send_after_commit(deliveries: list[Delivery]) -> None:
    """Announce them once the current transaction commits (notifications/signals.py). A
    failure to send (Redis away) is logged: the notification exists, polls carry it and
    reconnects bring it if it needs an ack."""

    def send() -> None:
        for receiver, outcome in notifications_created.send_robust(None, deliveries=deliveries):
            if isinstance(outcome, Exception):
                logger.error(
                    "could not send %d notification(s) (%s)",
                    len(deliveries),
                    getattr(receiver, "__qualname__", receiver),
                    exc_info=outcome,
                )

    transaction.on_commit(send)


# -- announcements ----------------------------------------------------------------------------


def announcement_context_resolve(*, actor: Any, context: str | None) -> str | None:
    """The canonical context an announcement is for (None: everyone). InvalidParameter for
    one that is malformed, `system` (leave it out instead) or does not exist."""
    if context is None:
        return None
    try:
        name = context_normalize(context)
    except InvalidContext as exc:
        raise InvalidParameter(f"`context`: {exc}") from None
    if name == SYSTEM:
        raise InvalidParameter("Leave `context` out (or null) to reach every client.")
    [decision] = contexts_authorize(user=actor, contexts=[name])
    if decision.code:
        raise InvalidParameter(f"`context`: {name} does not exist.")
    return decision.context


def broadcast_retry_after(*, user_id: int) -> int | None:
    """None if this staff user may broadcast now (the hit is counted); else the seconds
    until they may (NOTIFY_BROADCAST_RATE per user, over every server process)."""
    rate = parse_rate(settings.NOTIFY_BROADCAST_RATE)
    limiter = _broadcast_limiter()
    try:
        if limiter.hit(rate, "broadcast", str(user_id)):
            return None
        stats = limiter.get_window_stats(rate, "broadcast", str(user_id))
    except Exception:
        logger.warning("broadcast rate limit unavailable; letting it through", exc_info=True)
        return None
    return max(1, math.ceil(stats.reset_time - time.time()))


_limiter: FixedWindowRateLimiter | None = None


def _broadcast_limiter() -> FixedWindowRateLimiter:
    global _limiter
    if _limiter is None:
        storage = RedisStorage(
            settings.REDIS_URL,
            key_prefix=f"{settings.REDIS_PREFIX}:limits",
            socket_timeout=BROADCAST_RATE_TIMEOUT_S,
            socket_connect_timeout=BROADCAST_RATE_TIMEOUT_S,
        )
        _limiter = FixedWindowRateLimiter(storage)
    return _limiter


@transaction.atomic
def announcement_broadcast(
    *,
    actor: Any,
    level: str,
    title: str,
    body: str,
    context: str | None,
    requires_ack: bool,
) -> UpdateNotification:
    """Create a staff announcement, audit it, and send it to every client (or to the
    followers of `context`) on every transport once committed. The caller has checked
    that `actor` is staff, validated the texts and resolved the context."""
    now = timezone.now()
    notification = UpdateNotification.objects.create(
        notification_type=NotificationType.ANNOUNCEMENT,
        level=level,
        title=title,
        body=body,
        context=context,
        seq=change_log_state().head_seq,
        audience=NotificationAudience.PUBLIC,
        requires_ack=requires_ack,
        payload={},
        created_at=now,
        expires_at=now + _ttl(),
    )
    audit(
        actor=actor,
        action=BROADCAST,
        target=context or "all",
        details={
            "notification": str(notification.id),
            "level": level,
            "title": title,
            "requires_ack": requires_ack,
        },
    )
    notifications_send_after_commit([notification_row_delivery(notification)])
    return notification


# -- attempts and acknowledgements -------------------------------------------------------------


def notification_attempts_record(*, attempts: list[tuple[str, str, int]]) -> None:
    """Count deliveries, (notification id, client key, how many), in one statement: per
    client on the receipts, in total on the notifications. Notifications pruned meanwhile
    are skipped. Statistics: the commit does not wait for the WAL flush."""
    if not attempts:
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")
        cursor.execute(
            "WITH x AS (SELECT id, client_key, sum(n)::int AS n"
            "   FROM unnest(%s::uuid[], %s::text[], %s::int[]) AS x(id, client_key, n)"
            "   GROUP BY id, client_key),"
            " ok AS (SELECT x.* FROM x JOIN update_notifications u ON u.id = x.id),"
            " receipts AS (INSERT INTO notification_receipts"
            "   (notification_id, client_key, attempts, last_attempt_at)"
            "   SELECT id, client_key, n, now() FROM ok ORDER BY id, client_key"
            "   ON CONFLICT (notification_id, client_key) DO UPDATE"
            "   SET attempts = notification_receipts.attempts + EXCLUDED.attempts,"
            "   last_attempt_at = EXCLUDED.last_attempt_at)"
            " UPDATE update_notifications u SET delivery_attempts = u.delivery_attempts + s.n"
            " FROM (SELECT id, sum(n)::int AS n FROM ok GROUP BY id) s WHERE u.id = s.id",
            [[a[0] for a in attempts], [a[1] for a in attempts], [a[2] for a in attempts]],
        )


def _acknowledge(cursor, *, ids: list[str], client: str) -> None:
    cursor.execute(
        "INSERT INTO notification_receipts (notification_id, client_key, attempts,"
        " acknowledged_at) SELECT id, %s, 0, now() FROM unnest(%s::uuid[]) AS x(id)"
        " ORDER BY id ON CONFLICT (notification_id, client_key) DO UPDATE"
        " SET acknowledged_at = coalesce(notification_receipts.acknowledged_at, now())",
        [client, ids],
    )
    cursor.execute(
        "UPDATE update_notifications SET delivered_at = now()"
        " WHERE id = ANY(%s::uuid[]) AND delivered_at IS NULL",
        [ids],
    )


def notification_acknowledge(*, notification: str, client: str, audience: str) -> None:
    """The client acknowledges one notification: its receipt's acknowledged_at, and the
    notification's delivered_at if it is the first. Idempotent. NotificationIdInvalid for
    a string that is no id, NotificationNotFound for one the client may not see; neither
    changes anything."""
    notification_id = notification_id_parse(notification)
    if notification_id is None:
        raise NotificationIdInvalid()
    if (
        notification_visible(notification_id=notification_id, client=client, audience=audience)
        is None
    ):
        raise NotificationNotFound()
    with transaction.atomic(), connection.cursor() as cursor:
        _acknowledge(cursor, ids=[str(notification_id)], client=client)


def notifications_acknowledge_sent(*, ids: list[str], client: str) -> None:
    """Acknowledge notifications the caller knows were sent to this client."""
    if ids:
        with transaction.atomic(), connection.cursor() as cursor:
            _acknowledge(cursor, ids=sorted(set(ids)), client=client)


def notifications_acknowledge_through(*, client: str, seq: int) -> int:
    """`ack` with a `seq`: acknowledges the notifications requiring acknowledgement that
    were delivered to this client with a seq up to `seq`. How many."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.notification_id::text FROM notification_receipts r"
            " JOIN update_notifications n ON n.id = r.notification_id"
            " WHERE r.client_key = %s AND r.acknowledged_at IS NULL AND r.attempts > 0"
            " AND n.requires_ack AND n.seq <= %s",
            [client, seq],
        )
        ids = sorted(row[0] for row in cursor.fetchall())
        if ids:
            _acknowledge(cursor, ids=ids, client=client)
        return len(ids)


# -- retention ------------------------------------------------------------------------------


def notifications_prune(*, older_than: dt.timedelta | None = None, batch: int = 1000) -> int:
    """Delete notifications (and their receipts) expired for longer than
    NOTIFY_RETENTION_DAYS, in bounded batches. How many."""
    older_than = older_than or dt.timedelta(days=settings.NOTIFY_RETENTION_DAYS)
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "WITH doomed AS (SELECT id FROM update_notifications"
                "   WHERE expires_at < now() - %s ORDER BY expires_at LIMIT %s),"
                " receipts AS (DELETE FROM notification_receipts"
                "   WHERE notification_id IN (SELECT id FROM doomed))"
                " DELETE FROM update_notifications WHERE id IN (SELECT id FROM doomed)",
                [older_than, batch],
            )
            count = cursor.rowcount
        deleted += count
        if count < batch:
            return deleted
