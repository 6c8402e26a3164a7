"""Deterministic, realistic demo rows: industries, companies and their yearly emissions.

Everything random comes from one `random.Random(seed)`, ids included, and every timestamp
is derived from the reporting years, so the same arguments always produce the same rows.
Nothing here touches the database: `emissions.demo` loads the rows.
"""

from __future__ import annotations

import csv
import random
import uuid
from bisect import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from emissions.models import COMPANY_PROFILE_COLUMNS, VerificationStatus

# The demo's reference tables (industries, countries), one CSV file each: data edited as
# tables. A cell that lists several items separates them by ";".
REFERENCE_TABLES = Path(__file__).with_name("demo_data")


def _reference_table(name: str) -> list[dict[str, str]]:
    with (REFERENCE_TABLES / f"{name}.csv").open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _items(cell: str) -> tuple[str, ...]:
    return tuple(cell.split(";"))


# Company size spread around the industry's typical total: sigma 1.4 puts the top 0.1%
# about 75x above the median, and the Pareto factor adds the few giants of each sector.
SIZE_SIGMA = 1.4
GIANT_SHARE = 0.01
GIANT_PARETO_ALPHA = 1.2
GIANT_MAX_FACTOR = 40.0

# Yearly drift per company, in the range of real corporate trajectories (SBTi-aligned
# cuts of ~4-8%/year down to growing emitters), plus year-to-year noise.
DRIFT_RANGE = (-0.08, 0.04)
YEAR_NOISE_SIGMA = 0.06
SCOPE_NOISE_SIGMA = 0.04
SCOPE_MIX_SIGMA = 0.35
# Acquisitions, divestments and methodology changes: a rare step in the series.
STEP_CHANGE_SHARE = 0.02
STEP_CHANGE_RANGE = (0.6, 1.6)

NON_PUBLIC_SHARE = 0.05
# Many companies, notably smaller ones, do not report scope 3 at all.
NO_SCOPE3_SHARE = 0.12
# Companies with no record at all (newly listed, never disclosed).
SILENT_SHARE = 0.02
# Chance a reporting company has no record for a year; the newest years are the most
# often missing because their reports are not out yet. Gives ~90% coverage over 5 years.
MISSING_BASE = 0.05
MISSING_LAST_YEAR_EXTRA = 0.08
MISSING_SECOND_LAST_EXTRA = 0.03
# Verification lags publication: the newest year is more often still pending.
LAST_YEAR_PENDING_SHARE = 0.4

COMPANY_STATUS_WEIGHTS = {"verified": 60, "pending": 35, "rejected": 5}
RECORD_STATUS_WEIGHTS = {
    "verified": {"verified": 85, "pending": 13, "rejected": 2},
    "pending": {"verified": 35, "pending": 60, "rejected": 5},
    "rejected": {"verified": 10, "pending": 40, "rejected": 50},
}
# Mean and spread of data_quality_score by company verification status.
QUALITY_BY_STATUS = {"verified": (80.0, 10.0), "pending": (60.0, 15.0), "rejected": (35.0, 15.0)}
# "{next}" is the CDP cycle, named after the year it asks about the previous year.
# fmt: off
SOURCE_WEIGHTS = {
    "verified": {"CDP {next}": 35, "Sustainability report {year}": 30, "Annual report {year}": 25,
                 "Estimated": 10},
    "pending": {"CDP {next}": 20, "Sustainability report {year}": 20, "Annual report {year}": 25,
                "Estimated": 35},
    "rejected": {"Sustainability report {year}": 15, "Annual report {year}": 25,
                 "Estimated": 60},
}

# ISO 3166-1 alpha-2 codes weighted roughly by the number of large reporting companies,
# with the legal-form suffixes used there.
COUNTRIES: dict[str, tuple[float, tuple[str, ...]]] = {
    row["code"]: (float(row["weight"]), _items(row["legal_forms"]))
    for row in _reference_table("countries")
}

NAME_WORDS = (
    "Nordic", "Atlantic", "Pacific", "Baltic", "Alpine", "Summit", "Pioneer", "Apex",
    "Granite", "Silver", "Evergreen", "Northern", "Southern", "Eastern", "Western",
    "Central", "Global", "United", "Continental", "Royal", "Meridian", "Horizon",
    "Crescent", "Sterling", "Union", "Liberty", "Orion", "Titan", "Vertex", "Coastal",
    "Highland", "Riverside", "Harbor", "Keystone", "Redwood", "Cedar", "Aurora", "Polar",
    "Sunrise", "Delta", "Frontier", "Heritage", "Pinnacle", "Crown", "Falcon", "Phoenix",
    "Zenith", "Lakeshore", "Midland", "Iberian", "Rhine", "Danube", "Andes", "Sahara",
    "Savanna", "Sequoia", "Bluewater", "Greenfield", "Ironbridge", "Stonegate", "Oakridge",
    "Westbrook", "Eastgate", "Kingsway", "Lodestar", "Northstar", "Tidewater", "Clearwater",
)
SURNAMES = (
    "Andersen", "Becker", "Castell", "Duval", "Eriksson", "Fischer", "Garcia", "Hartmann",
    "Ito", "Jansen", "Kumar", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov", "Quinn",
    "Rossi", "Sato", "Tanaka", "Ueda", "Vargas", "Weber", "Xu", "Yamamoto", "Zhang",
    "Bauer", "Costa", "Dubois", "Fontaine", "Greco", "Haas", "Kowalski", "Larsen",
    "Meyer", "Nakamura", "Olsen", "Park", "Reyes", "Schmidt", "Takahashi", "Wagner",
)
# fmt: on
NAME_QUALIFIERS = ("Group", "Holdings", "International", "Industries", "Partners")
# Share of names built from surnames (of those, two partners' names), from two words,
# and with a qualifier.
SURNAME_NAME_SHARE = 0.3
PARTNERSHIP_SHARE = 0.3
DOUBLE_WORD_SHARE = 0.15
QUALIFIER_SHARE = 0.2


@dataclass(frozen=True, slots=True)
class IndustryProfile:
    """How one industry's companies look: how many, how big, which scopes dominate."""

    slug: str
    name: str
    sector: str
    weight: float  # relative number of companies
    typical_tonnes: float  # median yearly total of a company, t CO2e
    scope_mix: tuple[float, float, float]  # shares of scope 1, 2 and 3
    nouns: tuple[str, ...]  # business words used in company names


# Typical totals and scope mixes follow the shape of CDP disclosures: heavy industry and
# transport are scope 1 dominated, software and telecoms scope 2/3, finance (financed
# emissions) and consumer goods (supply chain, use of sold products) scope 3.
INDUSTRY_PROFILES = tuple(
    IndustryProfile(
        slug=row["slug"],
        name=row["name"],
        sector=row["sector"],
        weight=float(row["weight"]),
        typical_tonnes=float(row["typical_tonnes"]),
        scope_mix=(
            float(row["scope1_share"]),
            float(row["scope2_share"]),
            float(row["scope3_share"]),
        ),
        nouns=_items(row["nouns"]),
    )
    for row in _reference_table("industries")
)

COMPANY_COLUMNS = ("id", *COMPANY_PROFILE_COLUMNS, "created_at", "updated_at")
RECORD_COLUMNS = (
    "id",
    "company_id",
    "year",
    "scope1_tonnes",
    "scope2_tonnes",
    "scope3_tonnes",
    "source",
    "verification_status",
    "updated_at",
)


@dataclass(frozen=True, slots=True)
class DemoIndustry:
    """An industry row and the profile its companies are drawn from."""

    id: uuid.UUID
    profile: IndustryProfile


@dataclass(frozen=True, slots=True)
class DemoCompany:
    """A company row plus the hidden parameters its emission series is drawn from."""

    id: uuid.UUID
    name: str
    country: str
    industry: DemoIndustry
    is_public: bool
    verification_status: str
    data_quality_score: str
    created_at: datetime
    updated_at: datetime
    base_tonnes: tuple[float, float, float]  # scopes 1-3 in the first year
    drift: float  # yearly relative change
    silent: bool  # reports nothing at all

    def copy_row(self) -> tuple[Any, ...]:
        """The row in COMPANY_COLUMNS order."""
        return (
            self.id,
            self.name,
            self.country,
            self.industry.id,
            self.is_public,
            self.verification_status,
            self.data_quality_score,
            self.created_at,
            self.updated_at,
        )


class DemoRecord(NamedTuple):
    """An emission_records row in RECORD_COLUMNS order."""

    id: uuid.UUID
    company_id: uuid.UUID
    year: int
    scope1_tonnes: str
    scope2_tonnes: str
    scope3_tonnes: str
    source: str
    verification_status: str
    updated_at: datetime


def _uuid4(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _cumulative(weights: Iterable[float]) -> list[float]:
    total, out = 0.0, []
    for weight in weights:
        total += weight
        out.append(total)
    return [value / total for value in out]


class _Picker:
    """Weighted choice by one rng.random() call (faster than rng.choices per call)."""

    __slots__ = ("cumulative", "values")

    def __init__(self, weights: dict[Any, float]):
        self.values = list(weights)
        self.cumulative = _cumulative(weights.values())

    def __call__(self, rng: random.Random) -> Any:
        return self.values[min(bisect(self.cumulative, rng.random()), len(self.values) - 1)]


def demo_as_of(last_year: int) -> datetime:
    """The fixed "now" of a demo data set: autumn after the last reported year."""
    return datetime(last_year + 1, 10, 1, tzinfo=UTC)


def demo_industries(rng: random.Random) -> list[DemoIndustry]:
    """The demo industries, ids drawn from rng."""
    return [DemoIndustry(id=_uuid4(rng), profile=profile) for profile in INDUSTRY_PROFILES]


def _company_name(rng: random.Random, nouns: Sequence[str], suffixes: Sequence[str]) -> str:
    roll = rng.random()
    if roll < SURNAME_NAME_SHARE:
        if rng.random() < PARTNERSHIP_SHARE:
            head = " & ".join(rng.sample(SURNAMES, 2))
        else:
            head = rng.choice(SURNAMES)
    elif roll < SURNAME_NAME_SHARE + DOUBLE_WORD_SHARE:
        head = " ".join(rng.sample(NAME_WORDS, 2))
    else:
        head = rng.choice(NAME_WORDS)
    parts = [head, rng.choice(nouns)]
    if rng.random() < QUALIFIER_SHARE:
        parts.append(rng.choice(NAME_QUALIFIERS))
    parts.append(rng.choice(suffixes))
    return " ".join(parts)


def demo_companies(
    rng: random.Random, industries: Sequence[DemoIndustry], count: int, *, years: range
) -> Iterator[DemoCompany]:
    """Yield `count` companies spread over the industries, sizes heavily skewed."""
    pick_industry = _Picker({industry: industry.profile.weight for industry in industries})
    pick_country = _Picker({code: weight for code, (weight, _) in COUNTRIES.items()})
    pick_status = _Picker(COMPANY_STATUS_WEIGHTS)
    first_report = datetime(years[0] + 1, 1, 1, tzinfo=UTC)
    as_of = demo_as_of(years[-1])
    listed_window = 3 * 365 * 86400
    for _ in range(count):
        company_id = _uuid4(rng)
        industry = pick_industry(rng)
        profile = industry.profile
        country = pick_country(rng)
        status = pick_status(rng)
        mean, spread = QUALITY_BY_STATUS[status]
        quality = min(100.0, max(0.0, rng.gauss(mean, spread)))

        size = profile.typical_tonnes * rng.lognormvariate(0.0, SIZE_SIGMA)
        if rng.random() < GIANT_SHARE:
            size *= min(rng.paretovariate(GIANT_PARETO_ALPHA), GIANT_MAX_FACTOR)
        shares = [share * rng.lognormvariate(0.0, SCOPE_MIX_SIGMA) for share in profile.scope_mix]
        scale = size / sum(shares)
        base = [share * scale for share in shares]
        if rng.random() < NO_SCOPE3_SHARE:
            base[2] = 0.0

        created_at = first_report - timedelta(seconds=rng.randrange(listed_window))
        lifetime = int((as_of - created_at).total_seconds())
        yield DemoCompany(
            id=company_id,
            name=_company_name(rng, profile.nouns, COUNTRIES[country][1]),
            country=country,
            industry=industry,
            is_public=rng.random() >= NON_PUBLIC_SHARE,
            verification_status=status,
            data_quality_score=f"{quality:.2f}",
            created_at=created_at,
            updated_at=created_at + timedelta(seconds=rng.randrange(lifetime)),
            base_tonnes=(base[0], base[1], base[2]),
            drift=rng.uniform(*DRIFT_RANGE),
            silent=rng.random() < SILENT_SHARE,
        )


def _missing_chances(years: range) -> list[float]:
    chances = [MISSING_BASE] * len(years)
    chances[-1] += MISSING_LAST_YEAR_EXTRA
    if len(years) > 1:
        chances[-2] += MISSING_SECOND_LAST_EXTRA
    return chances


_RECORD_STATUS = {status: _Picker(weights) for status, weights in RECORD_STATUS_WEIGHTS.items()}
_SOURCE = {status: _Picker(weights) for status, weights in SOURCE_WEIGHTS.items()}


def demo_records(
    rng: random.Random, companies: Iterable[DemoCompany], *, years: range
) -> Iterator[DemoRecord]:
    """Yield each company's yearly records, oldest first, with gaps in coverage."""
    missing = list(zip(years, _missing_chances(years), strict=True))
    last_year = years[-1]
    publication_window = 240 * 86400
    published = {year: datetime(year + 1, 2, 1, tzinfo=UTC) for year in years}
    lognorm = rng.lognormvariate
    for company in companies:
        if company.silent:
            continue
        pick_status = _RECORD_STATUS[company.verification_status]
        pick_source = _SOURCE[company.verification_status]
        s1, s2, s3 = company.base_tonnes
        growth = 1.0 + company.drift
        level = 1.0
        for year, missing_chance in missing:
            if rng.random() < STEP_CHANGE_SHARE:
                level *= rng.uniform(*STEP_CHANGE_RANGE)
            factor = level * lognorm(0.0, YEAR_NOISE_SIGMA)
            level *= growth
            if rng.random() < missing_chance:
                continue
            status = pick_status(rng)
            verified_newest = status == "verified" and year == last_year
            if verified_newest and rng.random() < LAST_YEAR_PENDING_SHARE:
                status = VerificationStatus.PENDING.value
            yield DemoRecord(
                _uuid4(rng),
                company.id,
                year,
                f"{s1 * factor * lognorm(0.0, SCOPE_NOISE_SIGMA):.3f}",
                f"{s2 * factor * lognorm(0.0, SCOPE_NOISE_SIGMA):.3f}",
                f"{s3 * factor * lognorm(0.0, SCOPE_NOISE_SIGMA):.3f}" if s3 else "0.000",
                pick_source(rng).format(year=year, next=year + 1),
                status,
                published[year] + timedelta(seconds=rng.randrange(publication_window)),
            )
