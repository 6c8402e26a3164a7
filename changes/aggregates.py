"""Platform and industry totals, kept incrementally from the changes.

Each change carries, from its capture, everything its contribution depends on (the
record's values, its company's visibility and industry). A change's effect on a total
is its contribution after minus its contribution before, per audience, so totals are
exact whatever order unrelated changes are published in. A company's visibility or
industry move carries its records' values, read under a lock that serialises it with
concurrent writes to emission records (see emissions.models.COMPANY_MOVE_LOCK).

Totals are kept per scope (`platform`, `industry:<slug>`), year and audience; year
None holds the number of companies.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from changes.items import CapturedChange
from changes.models import AUDIENCE_PUBLIC, AUDIENCE_STAFF, AUDIENCES

PLATFORM = "platform"
MEASURES = ("total_tonnes", "scope1_tonnes", "scope2_tonnes", "scope3_tonnes")
COUNTERS = ("reporting_companies", "companies")
AggregateKey = tuple[str, int | None, str]


def industry_scope(slug: str) -> str:
    return f"industry:{slug}"


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


def _visible(audience: str, company_public: bool, status: str | None) -> bool:
    if audience == AUDIENCE_STAFF:
        return True
    return bool(company_public) and status != "rejected"


class AggregateDeltas:
    """Accumulates signed contributions per (scope, year, audience)."""

    def __init__(self, slugs: dict[str, str]):
        self.slugs = slugs
        self.deltas: dict[AggregateKey, dict[str, Decimal]] = defaultdict(
            lambda: defaultdict(Decimal)
        )

    def _scopes(self, industry_id: Any) -> list[str]:
        scopes = [PLATFORM]
        slug = self.slugs.get(str(industry_id))
        if slug:
            scopes.append(industry_scope(slug))
        return scopes

    def record(
        self,
        sign: int,
        values: dict[str, Any],
        *,
        industry_id: Any,
        company_public: bool,
    ) -> None:
        """Add (sign=1) or remove (sign=-1) one emission record's contribution."""
        year = values.get("year")
        if year is None:
            return
        for audience in AUDIENCES:
            if not _visible(audience, company_public, values.get("verification_status")):
                continue
            for scope in self._scopes(industry_id):
                bucket = self.deltas[(scope, year, audience)]
                for measure in MEASURES:
                    bucket[measure] += sign * _dec(values.get(measure))
                bucket["reporting_companies"] += sign

    def company(self, sign: int, *, industry_id: Any, is_public: bool) -> None:
        """Add or remove one company from the company counts."""
        for audience in AUDIENCES:
            if audience == AUDIENCE_PUBLIC and not is_public:
                continue
            for scope in self._scopes(industry_id):
                self.deltas[(scope, None, audience)]["companies"] += sign

    def add_change(self, change: CapturedChange) -> None:
        """The contribution of one captured change."""
        routing = change.routing
        old = change.change_data.get("old", {})
        if change.entity == "emission_record":
            after = {key: routing.get(key) for key in ("year", "verification_status", *MEASURES)}
            before = {**after, **{k: v for k, v in old.items() if k in after}}
            company_public = bool(routing.get("company_public"))
            industry_id = routing.get("industry_id")
            if change.change_type in ("update", "delete"):
                # A record moved to another company left that company's industry.
                moved_from = routing.get("old_company_public") is not None
                self.record(
                    -1,
                    before,
                    industry_id=routing["old_industry_id"] if moved_from else industry_id,
                    company_public=(
                        bool(routing["old_company_public"]) if moved_from else company_public
                    ),
                )
            if change.change_type in ("update", "insert"):
                self.record(1, after, industry_id=industry_id, company_public=company_public)
        elif change.entity == "company":
            if change.change_type == "insert":
                self.company(
                    1, industry_id=routing.get("industry_id"), is_public=routing["is_public"]
                )
            elif change.change_type == "delete":
                self.company(-1, industry_id=old.get("industry_id"), is_public=old.get("is_public"))
            elif routing.get("records") is not None:
                old_industry = routing.get("old_industry_id")
                old_public = bool(routing.get("old_is_public"))
                new_industry = routing.get("industry_id")
                new_public = bool(routing.get("is_public"))
                self.company(-1, industry_id=old_industry, is_public=old_public)
                self.company(1, industry_id=new_industry, is_public=new_public)
                for record in routing["records"]:
                    self.record(-1, record, industry_id=old_industry, company_public=old_public)
                    self.record(1, record, industry_id=new_industry, company_public=new_public)

    def moved(self) -> dict[AggregateKey, dict[str, Decimal]]:
        """Only the totals that really moved."""
        return {
            key: dict(values)
            for key, values in self.deltas.items()
            if any(value != 0 for value in values.values())
        }
