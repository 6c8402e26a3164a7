"""Deterministic, realistic demo data: industries, companies, yearly emissions, benchmarks.

Everything random comes from one `random.Random(seed)`, ids included, and every timestamp
is derived from the reporting years, so the same arguments always produce the same rows.
Rows are streamed into PostgreSQL with COPY; the database's own defaults and constraints
apply to them as to any other write. Change capture is paused for the load, which ends in
a new change-log epoch (the running totals and latest totals rebuilt from the tables).
"""

from __future__ import annotations

import random
import sys
import uuid
from bisect import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from django.db import connection, transaction
from tqdm import tqdm

from changes.capture import capture_pause_in_transaction
from changes.services import change_log_reset
from common.errors import ApplicationError
from emissions.models import VerificationStatus

DEMO_COMPANIES = 100_000
DEMO_YEARS = 5
DEMO_LAST_YEAR = 2024

# Rows handed to tqdm per update: updating per row would cost more than generating it.
PROGRESS_STEP = 1_000

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
    "US": (18, ("Inc.", "Corp.", "LLC", "Co.")),
    "CN": (11, ("Co., Ltd.", "Ltd.")),
    "JP": (8, ("Co., Ltd.", "Corporation", "K.K.")),
    "DE": (7, ("AG", "GmbH", "SE", "GmbH & Co. KG")),
    "GB": (6, ("plc", "Ltd")),
    "FR": (5, ("SA", "SAS")),
    "IN": (5, ("Ltd", "Pvt Ltd")),
    "CA": (4, ("Inc.", "Ltd.", "Corp.")),
    "KR": (4, ("Co., Ltd.", "Corporation")),
    "AU": (3, ("Ltd", "Pty Ltd")),
    "BR": (3, ("S.A.", "Ltda.")),
    "IT": (3, ("S.p.A.", "S.r.l.")),
    "ES": (3, ("S.A.", "S.L.")),
    "NL": (3, ("N.V.", "B.V.")),
    "CH": (3, ("AG", "SA")),
    "SE": (2, ("AB", "AB (publ)")),
    "TW": (2, ("Co., Ltd.", "Corporation")),
    "MX": (2, ("S.A.B. de C.V.", "S.A. de C.V.")),
    "ZA": (1.5, ("Ltd", "Pty Ltd")),
    "SG": (1.5, ("Pte Ltd", "Ltd")),
    "NO": (1.5, ("ASA", "AS")),
    "DK": (1.5, ("A/S",)),
    "FI": (1, ("Oyj", "Oy")),
    "BE": (1, ("NV", "SA")),
    "PL": (1, ("S.A.", "Sp. z o.o.")),
    "SA": (1, ("Co.", "Company")),
    "AE": (1, ("PJSC", "LLC")),
    "ID": (1, ("Tbk",)),
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
# fmt: off
INDUSTRY_PROFILES: tuple[IndustryProfile, ...] = (
    IndustryProfile("steel", "Steel", "Materials", 1.5, 500_000, (0.70, 0.10, 0.20),
                    ("Steel", "Steel Works", "Ironworks", "Metals")),
    IndustryProfile("cement", "Cement", "Materials", 1.2, 400_000, (0.85, 0.05, 0.10),
                    ("Cement", "Cement Works", "Building Materials")),
    IndustryProfile("aluminium", "Aluminium", "Materials", 0.8, 250_000, (0.40, 0.45, 0.15),
                    ("Aluminium", "Aluminium Works", "Light Metals")),
    IndustryProfile("chemicals", "Chemicals", "Materials", 4.0, 80_000, (0.45, 0.20, 0.35),
                    ("Chemicals", "Chemical Industries", "Specialty Chemicals", "Polymers")),
    IndustryProfile("mining", "Metals & Mining", "Materials", 2.5, 150_000, (0.35, 0.20, 0.45),
                    ("Mining", "Minerals", "Resources", "Copper")),
    IndustryProfile("paper-packaging", "Paper & Packaging", "Materials", 2.0, 40_000,
                    (0.50, 0.20, 0.30), ("Paper", "Packaging", "Pulp & Paper", "Board")),
    IndustryProfile("oil-gas", "Oil & Gas", "Energy", 2.0, 1_200_000, (0.15, 0.03, 0.82),
                    ("Petroleum", "Energy", "Oil & Gas", "Exploration")),
    IndustryProfile("coal", "Coal Mining", "Energy", 0.6, 900_000, (0.20, 0.03, 0.77),
                    ("Coal", "Collieries", "Coal Resources")),
    IndustryProfile("utilities", "Electric Utilities", "Utilities", 2.5, 800_000,
                    (0.85, 0.02, 0.13), ("Power", "Electric", "Energy", "Generation")),
    IndustryProfile("water-utilities", "Water Utilities", "Utilities", 1.0, 15_000,
                    (0.25, 0.50, 0.25), ("Water", "Water Services", "Utilities")),
    IndustryProfile("airlines", "Airlines", "Transportation", 0.8, 700_000,
                    (0.85, 0.01, 0.14), ("Airlines", "Airways", "Air")),
    IndustryProfile("shipping", "Marine Shipping", "Transportation", 1.2, 300_000,
                    (0.88, 0.01, 0.11), ("Shipping", "Maritime", "Tankers", "Lines")),
    IndustryProfile("logistics", "Road Freight & Logistics", "Transportation", 3.0, 60_000,
                    (0.70, 0.05, 0.25), ("Logistics", "Freight", "Transport", "Haulage")),
    IndustryProfile("railways", "Railways", "Transportation", 0.6, 100_000, (0.55, 0.30, 0.15),
                    ("Rail", "Railways", "Rail Freight")),
    IndustryProfile("automotive", "Automobiles & Components", "Consumer Discretionary", 3.0,
                    250_000, (0.04, 0.06, 0.90), ("Motors", "Automotive", "Auto Parts")),
    IndustryProfile("aerospace-defense", "Aerospace & Defense", "Industrials", 1.2, 80_000,
                    (0.08, 0.10, 0.82), ("Aerospace", "Aviation Systems", "Defence")),
    IndustryProfile("machinery", "Industrial Machinery", "Industrials", 6.0, 30_000,
                    (0.08, 0.12, 0.80), ("Machinery", "Engineering", "Equipment", "Tools")),
    IndustryProfile("construction", "Construction & Engineering", "Industrials", 5.0, 40_000,
                    (0.20, 0.10, 0.70), ("Construction", "Builders", "Infrastructure")),
    IndustryProfile("semiconductors", "Semiconductors", "Information Technology", 1.5, 100_000,
                    (0.15, 0.45, 0.40), ("Semiconductor", "Microelectronics", "Silicon")),
    IndustryProfile("software", "Software", "Information Technology", 8.0, 4_000,
                    (0.02, 0.28, 0.70), ("Software", "Systems", "Digital", "Cloud")),
    IndustryProfile("it-services", "IT Services", "Information Technology", 5.0, 6_000,
                    (0.03, 0.30, 0.67), ("Technologies", "IT Services", "Consulting", "Data")),
    IndustryProfile("telecom", "Telecommunications", "Communication Services", 2.0, 40_000,
                    (0.05, 0.55, 0.40), ("Telecom", "Communications", "Networks", "Mobile")),
    IndustryProfile("media", "Media & Entertainment", "Communication Services", 3.0, 3_000,
                    (0.04, 0.26, 0.70), ("Media", "Entertainment", "Broadcasting", "Studios")),
    IndustryProfile("banking", "Banking", "Financials", 4.0, 40_000, (0.005, 0.015, 0.98),
                    ("Bank", "Banking", "Savings Bank", "Financial")),
    IndustryProfile("insurance", "Insurance", "Financials", 2.5, 20_000, (0.01, 0.02, 0.97),
                    ("Insurance", "Assurance", "Reinsurance", "Mutual")),
    IndustryProfile("real-estate", "Real Estate", "Real Estate", 5.0, 8_000, (0.15, 0.45, 0.40),
                    ("Properties", "Real Estate", "Estates", "REIT")),
    IndustryProfile("retail", "Retail", "Consumer Discretionary", 6.0, 50_000,
                    (0.04, 0.16, 0.80), ("Retail", "Stores", "Supermarkets", "Trading")),
    IndustryProfile("food-beverage", "Food & Beverage", "Consumer Staples", 5.0, 90_000,
                    (0.12, 0.08, 0.80), ("Foods", "Beverages", "Brewing", "Dairy")),
    IndustryProfile("agriculture", "Agriculture", "Consumer Staples", 2.0, 60_000,
                    (0.55, 0.05, 0.40), ("Agri", "Farms", "Agribusiness", "Plantations")),
    IndustryProfile("pharmaceuticals", "Pharmaceuticals", "Health Care", 3.0, 25_000,
                    (0.08, 0.15, 0.77), ("Pharma", "Pharmaceuticals", "Life Sciences")),
)
# fmt: on

COMPANY_COLUMNS = (
    "id",
    "name",
    "country",
    "industry_id",
    "is_public",
    "verification_status",
    "data_quality_score",
    "created_at",
    "updated_at",
)
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

# One row per (industry, year, metric) over what anonymous users see: public companies,
# records that are not rejected. The id is an md5 of the row's key, v4-shaped, so reruns
# give the same ids without a random default.
BENCHMARKS_SQL = """
INSERT INTO industry_benchmarks
    (id, industry_id, year, metric, p25, median, p75, mean, company_count, computed_at)
SELECT overlay(overlay(md5(c.industry_id::text || ':' || er.year || ':' || m.metric)
                       PLACING '4' FROM 13 FOR 1) PLACING '8' FROM 17 FOR 1)::uuid,
       c.industry_id, er.year, m.metric,
       round(percentile_cont(0.25) WITHIN GROUP (ORDER BY m.value)::numeric, 3),
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY m.value)::numeric, 3),
       round(percentile_cont(0.75) WITHIN GROUP (ORDER BY m.value)::numeric, 3),
       round(avg(m.value), 3),
       count(*),
       %(computed_at)s
  FROM emission_records er
  JOIN companies c ON c.id = er.company_id
 CROSS JOIN LATERAL (VALUES ('total_tonnes', er.total_tonnes),
                            ('scope1_tonnes', er.scope1_tonnes)) AS m(metric, value)
 WHERE c.is_public AND er.verification_status <> 'rejected'
 GROUP BY c.industry_id, er.year, m.metric
"""

# Companies whose latest_* columns disagree with their newest non-rejected record.
LATEST_MISMATCH_SQL = """
SELECT count(*)
  FROM companies c
  LEFT JOIN (SELECT DISTINCT ON (company_id) company_id, year, total_tonnes
               FROM emission_records
              WHERE verification_status <> 'rejected'
              ORDER BY company_id, year DESC) l ON l.company_id = c.id
 WHERE (c.latest_year, c.latest_total_tonnes) IS DISTINCT FROM (l.year, l.total_tonnes)
"""

DEMO_TABLES = ("industry_benchmarks", "emission_records", "companies", "industries")


class DemoDataExists(ApplicationError):
    """Demo data was asked for on a database that already holds companies."""

    code = "demo_data_exists"


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


def demo_data_exists() -> bool:
    """Whether any company exists (the demo loader refuses to mix with real data)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM companies)")
        return cursor.fetchone()[0]


def _bar(progress: bool, total: int, desc: str) -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit=" companies",
        unit_scale=True,
        file=sys.stderr,
        disable=not (progress and sys.stderr.isatty()),
        leave=True,
    )


def _stage(progress: bool, text: str) -> None:
    if progress and sys.stderr.isatty():
        tqdm.write(f"{text}...", file=sys.stderr)


def _copy(
    cursor: Any, table: str, columns: Sequence[str], rows: Iterable[tuple], *, progress: bool
) -> int:
    count = 0
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
        # Constraint checks and AFTER triggers run when the COPY ends, which takes a while.
        _stage(progress, f"finishing COPY {table}")
    return count


def _counted(items: Iterable[Any], bar: tqdm) -> Iterator[Any]:
    pending = 0
    for item in items:
        yield item
        pending += 1
        if pending == PROGRESS_STEP:
            bar.update(pending)
            pending = 0
    bar.update(pending)


def _kept(item: Any, into: list) -> Any:
    into.append(item)
    return item


def demo_data_load(
    *,
    companies: int,
    years: int,
    seed: int,
    last_year: int = DEMO_LAST_YEAR,
    replace: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Load the seeded demo data set in one transaction and return the row counts."""
    if companies < 0 or years < 1:
        raise ValueError("companies must be >= 0 and years >= 1")
    rng = random.Random(seed)
    year_range = range(last_year - years + 1, last_year + 1)
    as_of = demo_as_of(last_year)
    counts: dict[str, int] = {}
    with transaction.atomic():
        if replace:
            # ACCESS EXCLUSIVE until commit; CASCADE also empties tables referencing these.
            with connection.cursor() as cursor:
                cursor.execute(f"TRUNCATE {', '.join(DEMO_TABLES)} CASCADE")
        elif demo_data_exists():
            raise DemoDataExists("Companies already exist.")

        connection.ensure_connection()
        with connection.connection.cursor() as cursor:
            # Half a million rows are not half a million changes for open dashboards: the
            # load bypasses capture and starts a new change-log epoch below instead.
            capture_pause_in_transaction(cursor)
            industries = demo_industries(rng)
            counts["industries"] = _copy(
                cursor,
                "industries",
                ("id", "slug", "name", "sector"),
                ((i.id, i.profile.slug, i.profile.name, i.profile.sector) for i in industries),
                progress=False,
            )

            # The series parameters are kept so records can be drawn after the companies
            # are in: COPY into emission_records checks its foreign key per row.
            plans: list[DemoCompany] = []
            with _bar(progress, companies, "companies") as bar:
                generated = demo_companies(rng, industries, companies, years=year_range)
                counts["companies"] = _copy(
                    cursor,
                    "companies",
                    COMPANY_COLUMNS,
                    (_kept(company, plans).copy_row() for company in _counted(generated, bar)),
                    progress=progress,
                )
            with _bar(progress, companies, "emission records") as bar:
                counts["emission_records"] = _copy(
                    cursor,
                    "emission_records",
                    RECORD_COLUMNS,
                    demo_records(rng, _counted(plans, bar), years=year_range),
                    progress=progress,
                )
            plans.clear()

            _stage(progress, "computing industry benchmarks")
            cursor.execute(BENCHMARKS_SQL, {"computed_at": as_of})
            counts["industry_benchmarks"] = cursor.rowcount

        # A new epoch: the running totals and the companies' latest totals are rebuilt
        # from the loaded tables.
        change_log_reset(reason=f"demo data loaded ({companies} companies, seed {seed})")
        with connection.cursor() as cursor:
            _stage(progress, "checking the companies' latest totals")
            cursor.execute(LATEST_MISMATCH_SQL)
            mismatched = cursor.fetchone()[0]
            if mismatched:
                raise RuntimeError(f"{mismatched} companies have stale latest totals")
            cursor.execute("SELECT count(*) FROM companies WHERE latest_year IS NOT NULL")
            counts["companies_with_latest"] = cursor.fetchone()[0]

    _stage(progress, "analyzing")
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {', '.join(DEMO_TABLES)}")
    return counts
