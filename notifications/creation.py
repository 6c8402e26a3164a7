"""Notifications created by the publisher, in the batch's transaction: which changes are
worth one (notifications/rules.py), their texts and audiences."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from decimal import Decimal
from typing import Any

from django.conf import settings

from changes.items import CapturedChange
from common.json import json_dumps
from notifications.messages import (
    Delivery,
    delivery,
    notification_message,
)
from notifications.models import (
    BODY_MAX_LENGTH,
    TITLE_MAX_LENGTH,
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
from notifications.services import notification_ttl

logger = logging.getLogger(__name__)


def _title(text: str) -> str:
    return text if len(text) <= TITLE_MAX_LENGTH else text[: TITLE_MAX_LENGTH - 1] + "…"


def _tonnes(value: Any) -> str:
    return f"{Decimal(str(value)):,.0f} t CO2e"


def _plain(value: Any) -> str:
    """A number as people write it: 25, 12.5 (not 25.00 or 2.5E+1)."""
    return f"{Decimal(str(value)).normalize():f}"


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
    expires = now + notification_ttl()
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
