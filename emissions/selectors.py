"""Reads of the tracked domain, with the audience rules applied in one place.

Audience (PROTOCOL.md): anonymous and ordinary users see public companies and their
records except `rejected` ones; staff see everything.

`using` names the database a read-only snapshot reads (changes.selectors.state_for_read
chooses it: the replica when fresh enough); by default the primary.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import connections
from django.db.models import OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, Concat

from changes.aggregates import MEASURES, PLATFORM, industry_scope
from changes.models import AUDIENCE_PUBLIC, AUDIENCE_STAFF, AggregateTotal
from changes.replica import PRIMARY
from common.errors import NotFound
from emissions.models import (
    Company,
    EmissionRecord,
    Industry,
    IndustryBenchmark,
    VerificationStatus,
)

# Top emitters on the overview: enough to fill one dashboard panel.
TOP_EMITTERS = 10


def user_sees_everything(*, user: Any) -> bool:
    """Staff see non-public companies and rejected records; nobody else does."""
    return bool(user is not None and user.is_authenticated and user.is_staff)


def industries_fingerprint(*, using: str = PRIMARY) -> str:
    """A digest of every industry's shown fields: no capture covers industries, so a
    snapshot's tag (emissions/snapshot_etags.py) must move when an admin edits one."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT md5(coalesce(string_agg(id::text || '|' || slug || '|' || name || '|'"
            " || sector, ',' ORDER BY id), '')) FROM industries"
        )
        return cursor.fetchone()[0]


def company_visible_queryset(*, user: Any, using: str = PRIMARY) -> QuerySet[Company]:
    """Companies the user may see."""
    companies = Company.objects.using(using).select_related("industry")
    if user_sees_everything(user=user):
        return companies
    return companies.filter(is_public=True)


def emission_record_visible_queryset(
    *, user: Any, using: str = PRIMARY
) -> QuerySet[EmissionRecord]:
    """Emission records the user may see."""
    records = EmissionRecord.objects.using(using).all()
    if user_sees_everything(user=user):
        return records
    return records.filter(company__is_public=True).exclude(
        verification_status=VerificationStatus.REJECTED
    )


def company_list(
    *,
    user: Any,
    industry: Industry | None = None,
    country: str | None = None,
    verification_status: str | None = None,
    search: str | None = None,
    using: str = PRIMARY,
) -> QuerySet[Company]:
    """The directory: visible companies, filtered; ordering is the caller's."""
    companies = company_visible_queryset(user=user, using=using)
    if industry is not None:
        companies = companies.filter(industry=industry)
    if country:
        companies = companies.filter(country=country)
    if verification_status:
        companies = companies.filter(verification_status=verification_status)
    if search:
        companies = companies.filter(name__icontains=search)
    return companies


def company_get(*, user: Any, company_id: uuid.UUID | str, using: str = PRIMARY) -> Company:
    """One visible company; a hidden one is as absent as a missing one."""
    try:
        return company_visible_queryset(user=user, using=using).get(pk=company_id)
    except (Company.DoesNotExist, ValueError) as exc:
        raise NotFound("No such company.") from exc


def company_emission_records(*, user: Any, company: Company) -> list[EmissionRecord]:
    """The company's visible records, oldest year first (from the database the company
    was read from)."""
    records = emission_record_visible_queryset(user=user, using=company._state.db or PRIMARY)
    return list(records.filter(company=company).order_by("year"))


def company_names(*, user: Any, company_ids: list[str], using: str = PRIMARY) -> dict[str, dict]:
    """Name, country and industry slug of the visible companies among `company_ids`."""
    rows = company_visible_queryset(user=user, using=using).filter(pk__in=company_ids)
    return {
        str(company.id): {
            "name": company.name,
            "country": company.country,
            "industry": company.industry.slug,
        }
        for company in rows
    }


def industry_get_by_slug(*, slug: str, using: str = PRIMARY) -> Industry | None:
    """The industry with this slug, or None."""
    return Industry.objects.using(using).filter(slug=slug).first()


def industry_get(*, slug: str, using: str = PRIMARY) -> Industry:
    """The industry with this slug; industries themselves are public."""
    industry = industry_get_by_slug(slug=slug, using=using)
    if industry is None:
        raise NotFound("No such industry.")
    return industry


def audience_of(*, user: Any) -> str:
    """The audience whose totals and changes the user sees."""
    return AUDIENCE_STAFF if user_sees_everything(user=user) else AUDIENCE_PUBLIC


def published_totals(
    *, user: Any, using: str = PRIMARY, scope: str | None = None
) -> dict[tuple[str, int | None], dict]:
    """The running totals the publisher keeps (aggregate_totals) for the user's audience,
    by (scope, year): a few hundred rows in one read, where summing the records costs a
    scan of every record of the year (180 ms at 100,000 companies). They are the totals
    of what is published, so a snapshot built from them is exact at its seq. `scope`:
    that scope's rows alone."""
    rows = AggregateTotal.objects.using(using).filter(audience=audience_of(user=user))
    if scope is not None:
        rows = rows.filter(scope=scope)
    return {
        (row.scope, row.year): {
            **{measure: getattr(row, measure) for measure in MEASURES},
            "reporting_companies": row.reporting_companies,
            "companies": row.companies,
        }
        for row in rows
    }


def industry_list(*, user: Any, using: str = PRIMARY) -> QuerySet[Industry]:
    """Industries with the number of companies the user may see, from the publisher's
    running totals (an index lookup each, where counting companies scans them)."""
    counts = AggregateTotal.objects.using(using).filter(
        scope=Concat(Value("industry:"), OuterRef("slug")),
        year__isnull=True,
        audience=audience_of(user=user),
    )
    return Industry.objects.using(using).annotate(
        company_count=Coalesce(Subquery(counts.values("companies")[:1]), 0)
    )


def industry_published_totals(*, user: Any, industry: Industry) -> dict:
    """The industry's visible company count and emissions per year (oldest first), from
    the publisher's running totals of its scope alone, in one read of the database the
    industry was read from. Years with no visible record left are not listed."""
    totals = published_totals(
        user=user, using=industry._state.db or PRIMARY, scope=industry_scope(industry.slug)
    )
    by_year = {year: row for (_, year), row in totals.items()}
    companies = by_year.pop(None, {}).get("companies", 0)
    return {
        "company_count": companies,
        "totals_by_year": [
            {"year": year, **{k: v for k, v in row.items() if k != "companies"}}
            for year, row in sorted(by_year.items())
            if row["reporting_companies"]
        ],
    }


def industry_benchmarks(*, industry: Industry) -> list[IndustryBenchmark]:
    """The industry's benchmark rows, by year then metric."""
    return list(industry.benchmarks.order_by("year", "metric"))


def overview_get(*, user: Any, year: int | None = None, using: str = PRIMARY) -> dict:
    """Platform totals, totals by industry and the top emitters for one year: the totals
    from the publisher's running totals (published_totals), the top emitters from the
    records' (year, total) index."""
    totals_by = published_totals(user=user, using=using)
    if year is None:
        reported = [
            y for (_, y), t in totals_by.items() if y is not None and t["reporting_companies"]
        ]
        year = max(reported, default=None)
    industries = list(Industry.objects.using(using).order_by("slug"))
    industry_rows = []
    for industry in industries:
        totals = totals_by.get((industry_scope(industry.slug), year), {})
        industry_rows.append(
            {
                "slug": industry.slug,
                "name": industry.name,
                "sector": industry.sector,
                "company_count": totals_by.get((industry_scope(industry.slug), None), {}).get(
                    "companies", 0
                ),
                "reporting_companies": totals.get("reporting_companies", 0),
                "total_tonnes": totals.get("total_tonnes") or 0,
            }
        )
    industry_rows.sort(key=lambda row: (-row["total_tonnes"], row["slug"]))
    platform = totals_by.get((PLATFORM, year), {})

    def total(key: str) -> Any:
        return platform.get(key) or 0

    top_records = (
        emission_record_visible_queryset(user=user, using=using)
        .filter(year=year)
        .select_related("company__industry")
        .order_by("-total_tonnes", "id")[:TOP_EMITTERS]
    )
    top_emitters = [
        {
            "id": record.company_id,
            # The record behind the row: live emission_record items name it by id.
            "record_id": record.id,
            "name": record.company.name,
            "country": record.company.country,
            "industry": record.company.industry.slug,
            "year": record.year,
            "total_tonnes": record.total_tonnes,
        }
        for record in top_records
    ]
    return {
        "year": year,
        "totals": {
            "companies": sum(row["company_count"] for row in industry_rows),
            "reporting_companies": total("reporting_companies"),
            "total_tonnes": total("total_tonnes"),
            "scope1_tonnes": total("scope1_tonnes"),
            "scope2_tonnes": total("scope2_tonnes"),
            "scope3_tonnes": total("scope3_tonnes"),
            "industries": len(industry_rows),
        },
        "by_industry": industry_rows,
        "top_emitters": top_emitters,
    }
