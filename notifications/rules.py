"""Which published changes deserve a notification: the configurable rules (`NOTIFY_RULES`).

Pure functions over what the publisher already has (the captured changes with their seq,
and the industries' top companies before and after the batch); the writes are in
`notifications.services`. The rules, all settings (README, docs/protocol.md):

- `total_move_pct`: an emission record whose total moves by this many percent or more
  (`warning`; `critical` from `total_critical_pct`) notifies the company's followers;
- `rank_top_n`: a company entering or leaving its industry's top N by latest reported
  total (the public ranking: public companies, non-rejected records) notifies the
  industry's followers (`info`);
- `verification`: a company's or a record's verification status changing notifies the
  company's followers (`info` when verified, `warning` back to pending, `critical` when
  rejected);
- `new_company`: a company inserted notifies the followers of its industry (a "watched"
  industry is one a session is subscribed to) (`info`);
- `quality_points`: a data-quality score moving by this many points or more notifies the
  company's followers (`warning` when it drops, `info` when it rises);
- `ack_levels`: the levels whose notifications require acknowledgement.

A zero threshold (or false) turns a rule off. A notification about a non-public company
or a rejected record (before or after the change) is for staff only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings

from changes.contexts import company_context, industry_context
from changes.items import CapturedChange, public_visibility
from notifications.models import NotificationAudience, NotificationLevel, NotificationType

# Plain strings (a TextChoices member hashes by its name, not its value).
INFO = NotificationLevel.INFO.value
WARNING = NotificationLevel.WARNING.value
CRITICAL = NotificationLevel.CRITICAL.value
PUBLIC = NotificationAudience.PUBLIC.value
STAFF = NotificationAudience.STAFF.value
TOTAL_MOVE = NotificationType.TOTAL_MOVE.value
RANKING_CHANGE = NotificationType.RANKING_CHANGE.value
VERIFICATION_CHANGE = NotificationType.VERIFICATION_CHANGE.value
NEW_COMPANY = NotificationType.NEW_COMPANY.value
DATA_QUALITY = NotificationType.DATA_QUALITY.value

DEFAULT_RULES: dict[str, Any] = {
    "total_move_pct": 25.0,
    "total_critical_pct": 50.0,
    "rank_top_n": 5,
    "verification": True,
    "new_company": True,
    "quality_points": 20.0,
    "ack_levels": ["critical"],
}

LEVEL_ORDER = {INFO: 0, WARNING: 1, CRITICAL: 2}


def notify_rules() -> dict[str, Any]:
    """The configured rules over the defaults."""
    return {**DEFAULT_RULES, **getattr(settings, "NOTIFY_RULES", {})}


@dataclass
class Candidate:
    """A notification the rules ask for, before names are known and texts written."""

    change: CapturedChange
    notification_type: str
    level: str
    context: str
    audience: str
    company_id: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RankedCompany:
    """One company of an industry's top N."""

    company_id: str
    name: str
    total: Decimal
    year: int | None


def _audience(change: CapturedChange) -> str:
    """Public only when anonymous users could see the record before and after the change
    (an insert has no before, a delete no after)."""
    before, after = public_visibility(change)
    if change.change_type == "insert":
        before = after
    elif change.change_type == "delete":
        after = before
    return PUBLIC if before and after else STAFF


def _number(value: Any) -> Decimal:
    return Decimal(str(value if value is not None else 0))


def _status_level(status: str) -> str:
    if status == "rejected":
        return CRITICAL
    if status == "pending":
        return WARNING
    return INFO


def _verification(
    change: CapturedChange,
    context: str,
    audience: str,
    facts: dict[str, Any],
    old: dict[str, Any],
    new: dict[str, Any],
) -> Candidate:
    """A company's or a record's verification status changed; `facts` say which one."""
    status = new["verification_status"]
    return Candidate(
        change,
        VERIFICATION_CHANGE,
        _status_level(status),
        context,
        audience,
        facts["company_id"],
        {**facts, "previous_status": old.get("verification_status"), "status": status},
    )


def _record_candidates(change: CapturedChange, rules: dict) -> list[Candidate]:
    if change.change_type != "update":
        return []
    old, new = change.change_data.get("old", {}), change.change_data.get("new", {})
    company_id = str(change.routing.get("company_id"))
    context = company_context(company_id)
    audience = _audience(change)
    year = change.routing.get("year")
    out = []
    threshold = rules["total_move_pct"]
    if threshold and "total_tonnes" in new and "total_tonnes" in old:
        before, after = _number(old["total_tonnes"]), _number(new["total_tonnes"])
        pct = None if before == 0 else float(abs(after - before) / abs(before) * 100)
        if pct is None or pct >= threshold:
            critical = pct is None or pct >= rules["total_critical_pct"]
            out.append(
                Candidate(
                    change,
                    TOTAL_MOVE,
                    CRITICAL if critical else WARNING,
                    context,
                    audience,
                    company_id,
                    {
                        "company_id": company_id,
                        "record_id": str(change.record_id),
                        "year": year,
                        "previous_total_tonnes": before,
                        "total_tonnes": after,
                        "change_pct": None if pct is None else round(pct, 1),
                    },
                )
            )
    if rules["verification"] and "verification_status" in new:
        facts = {"company_id": company_id, "record_id": str(change.record_id), "year": year}
        out.append(_verification(change, context, audience, facts, old, new))
    return out


def _company_candidates(
    change: CapturedChange, rules: dict, slugs: dict[str, str]
) -> list[Candidate]:
    company_id = str(change.record_id)
    audience = _audience(change)
    new = change.change_data.get("new", {})
    if change.change_type == "insert":
        slug = slugs.get(str(new.get("industry_id")))
        if not rules["new_company"] or not slug:
            return []
        return [
            Candidate(
                change,
                NEW_COMPANY,
                INFO,
                industry_context(slug),
                audience,
                company_id,
                {
                    "company_id": company_id,
                    "name": new.get("name"),
                    "country": new.get("country"),
                    "industry": slug,
                },
            )
        ]
    if change.change_type != "update":
        return []
    old = change.change_data.get("old", {})
    context = company_context(company_id)
    out = []
    if rules["verification"] and "verification_status" in new:
        out.append(_verification(change, context, audience, {"company_id": company_id}, old, new))
    points = rules["quality_points"]
    if points and "data_quality_score" in new:
        before, after = _number(old.get("data_quality_score")), _number(new["data_quality_score"])
        if abs(after - before) >= Decimal(str(points)):
            out.append(
                Candidate(
                    change,
                    DATA_QUALITY,
                    WARNING if after < before else INFO,
                    context,
                    audience,
                    company_id,
                    {
                        "company_id": company_id,
                        "previous_score": before,
                        "score": after,
                    },
                )
            )
    return out


def change_candidates(
    changes: list[CapturedChange], *, rules: dict, slugs: dict[str, str]
) -> list[Candidate]:
    """The notifications the per-change rules ask for, in seq order."""
    out: list[Candidate] = []
    for change in changes:
        if change.entity == "emission_record":
            out.extend(_record_candidates(change, rules))
        elif change.entity == "company":
            out.extend(_company_candidates(change, rules, slugs))
    return out


def ranking_candidates(
    changes: list[CapturedChange],
    *,
    before: dict[str, list[RankedCompany]],
    after: dict[str, list[RankedCompany]],
    slugs: dict[str, str],
    top_n: int,
) -> list[Candidate]:
    """Companies that entered or left an industry's top N between the two snapshots.

    Each is attributed to the batch's last change of that company's records (the company
    that moved), else to the last record change in the industry (it was pushed aside).
    """
    by_company: dict[str, CapturedChange] = {}
    by_industry: dict[str, CapturedChange] = {}
    for change in changes:
        if change.entity != "emission_record":
            continue
        by_company[str(change.routing.get("company_id"))] = change
        for key in ("industry_id", "old_industry_id"):
            if change.routing.get(key):
                by_industry[str(change.routing[key])] = change
    out: list[Candidate] = []
    for industry_id in sorted(set(before) | set(after)):
        slug = slugs.get(industry_id)
        cause = by_industry.get(industry_id)
        if slug is None or cause is None:
            continue
        old_top = {c.company_id: c for c in before.get(industry_id, [])[:top_n]}
        new_list = after.get(industry_id, [])[:top_n]
        new_top = {c.company_id: (rank, c) for rank, c in enumerate(new_list, start=1)}
        for company_id, (rank, company) in new_top.items():
            if company_id not in old_top:
                out.append(
                    _ranking(by_company.get(company_id, cause), slug, company, "entered", rank)
                )
        for company_id, company in old_top.items():
            if company_id not in new_top:
                out.append(_ranking(by_company.get(company_id, cause), slug, company, "left", None))
    return out


def _ranking(
    change: CapturedChange, slug: str, company: RankedCompany, movement: str, rank: int | None
) -> Candidate:
    return Candidate(
        change,
        RANKING_CHANGE,
        INFO,
        industry_context(slug),
        # Both rankings are public ones; whether the company is still public is decided
        # once names are read (services).
        PUBLIC,
        company.company_id,
        {
            "company_id": company.company_id,
            "name": company.name,
            "industry": slug,
            "movement": movement,
            "rank": rank,
            "total_tonnes": company.total,
            "year": company.year,
        },
    )


def candidates_cap(candidates: list[Candidate], limit: int) -> list[Candidate]:
    """The `limit` most important candidates (highest level, then earliest), in seq order:
    a bulk statement must not become thousands of toasts."""
    ranked = sorted(
        enumerate(candidates),
        key=lambda pair: (-LEVEL_ORDER[pair[1].level], pair[1].change.seq or 0, pair[0]),
    )
    kept = sorted(ranked[:limit], key=lambda pair: pair[0])
    return [candidate for _, candidate in kept]
