"""The demo data loader: deterministic, realistic, consistent with the database rules."""

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from emissions.demo import demo_data_load
from emissions.demo_generator import INDUSTRY_PROFILES

# Committed transactions, as the command runs: Django's foreign keys are deferred, so
# TRUNCATE (--replace) refuses inside a transaction that still owes their checks.
pytestmark = pytest.mark.django_db(transaction=True)

TABLES = ("industries", "companies", "emission_records", "industry_benchmarks")
YEARS = 5


def scalar(sql: str, params: tuple = ()) -> object:
    """The single value of a query."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def digests() -> dict[str, str]:
    """An md5 of every row of each demo table, in id order."""
    return {
        table: scalar(
            f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM {table} t"
        )
        for table in TABLES
    }


def load(companies: int = 500, seed: int = 42, **kwargs) -> dict[str, int]:
    """Load demo data without progress bars."""
    return demo_data_load(companies=companies, years=YEARS, seed=seed, progress=False, **kwargs)


def test_same_seed_gives_identical_rows_and_another_seed_does_not():
    load(seed=7)
    first = digests()
    load(seed=7, replace=True)
    assert digests() == first
    load(seed=8, replace=True)
    other = digests()
    assert all(other[table] != first[table] for table in TABLES)


def test_counts_and_shares_look_like_the_real_world():
    companies = 2000
    counts = load(companies=companies)

    assert counts["companies"] == scalar("SELECT count(*) FROM companies") == companies
    assert counts["industries"] == scalar("SELECT count(*) FROM industries")
    assert counts["industries"] == len(INDUSTRY_PROFILES) == 30
    records = scalar("SELECT count(*) FROM emission_records")
    assert counts["emission_records"] == records
    assert 0.85 * companies * YEARS <= records <= companies * YEARS
    assert scalar("SELECT array_agg(DISTINCT year ORDER BY year) FROM emission_records") == [
        2020,
        2021,
        2022,
        2023,
        2024,
    ]

    non_public = scalar("SELECT avg((NOT is_public)::int) FROM companies")
    assert 0.03 <= non_public <= 0.07
    shares = dict(
        _rows(
            "SELECT verification_status, count(*)::float / %s FROM companies GROUP BY 1",
            (companies,),
        )
    )
    assert 0.55 <= shares["verified"] <= 0.65
    assert 0.30 <= shares["pending"] <= 0.40
    assert 0.03 <= shares["rejected"] <= 0.07
    assert scalar("SELECT count(DISTINCT verification_status) FROM emission_records") == 3
    assert scalar("SELECT count(DISTINCT country) FROM companies") >= 20
    sources = {source for (source,) in _rows("SELECT DISTINCT source FROM emission_records")}
    assert {"Estimated", "CDP 2025", "Annual report 2024", "Sustainability report 2020"} <= sources

    slugs = [slug for (slug,) in _rows("SELECT slug FROM industries")]
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug) for slug in slugs)
    assert {"steel", "cement", "oil-gas", "software", "banking", "retail"} <= set(slugs)


def test_sizes_are_skewed_and_scope_mix_follows_the_industry():
    load(companies=2000)
    # A few huge emitters: the top 1% emit far more than the bottom half together.
    top, bottom_half = _rows(
        """SELECT sum(latest_total_tonnes) FILTER (WHERE rank <= 0.01),
                  sum(latest_total_tonnes) FILTER (WHERE rank > 0.5)
             FROM (SELECT latest_total_tonnes,
                          percent_rank() OVER (ORDER BY latest_total_tonnes DESC) AS rank
                     FROM companies WHERE latest_total_tonnes IS NOT NULL) ranked"""
    )[0]
    assert top > 3 * bottom_half

    mix = {
        slug: (s1, s3)
        for slug, s1, s3 in _rows(
            """SELECT i.slug, sum(er.scope1_tonnes) / sum(er.total_tonnes),
                      sum(er.scope3_tonnes) / sum(er.total_tonnes)
                 FROM emission_records er
                 JOIN companies c ON c.id = er.company_id
                 JOIN industries i ON i.id = c.industry_id
                GROUP BY i.slug"""
        )
    }
    assert mix["cement"][0] > 0.6
    assert mix["software"][0] < 0.1
    assert mix["banking"][1] > 0.9


def test_rows_respect_the_column_rules():
    load()
    assert (
        scalar(
            "SELECT count(*) FROM companies WHERE data_quality_score NOT BETWEEN 0 AND 100"
            " OR scale(data_quality_score) <> 2 OR country !~ '^[A-Z]{2}$' OR name = ''"
        )
        == 0
    )
    assert (
        scalar(
            "SELECT count(*) FROM emission_records"
            " WHERE total_tonnes <> scope1_tonnes + scope2_tonnes + scope3_tonnes"
            " OR least(scope1_tonnes, scope2_tonnes, scope3_tonnes) < 0"
        )
        == 0
    )
    # Timestamps come from the reporting years, not from the clock.
    assert scalar("SELECT max(updated_at) FROM emission_records") < scalar(
        "SELECT '2025-10-01'::timestamptz"
    )
    assert scalar("SELECT count(*) FROM companies WHERE updated_at < created_at") == 0


def test_load_fills_latest_year_and_total():
    counts = load()
    assert (
        scalar(
            """SELECT count(*) FROM companies c
             LEFT JOIN LATERAL (SELECT year, total_tonnes FROM emission_records er
                                 WHERE er.company_id = c.id
                                   AND er.verification_status <> 'rejected'
                                 ORDER BY year DESC LIMIT 1) l ON true
            WHERE (c.latest_year, c.latest_total_tonnes)
                  IS DISTINCT FROM (l.year, l.total_tonnes)"""
        )
        == 0
    )
    with_latest = scalar("SELECT count(*) FROM companies WHERE latest_total_tonnes IS NOT NULL")
    assert counts["companies_with_latest"] == with_latest > 0.9 * counts["companies"]


def test_benchmarks_cover_each_industry_year_and_are_ordered():
    counts = load(companies=1000)
    assert counts["industry_benchmarks"] == scalar("SELECT count(*) FROM industry_benchmarks")
    assert scalar("SELECT array_agg(DISTINCT metric ORDER BY metric) FROM industry_benchmarks") == [
        "scope1_tonnes",
        "total_tonnes",
    ]
    # One row per metric for every (industry, year) with visible records, counted right.
    assert (
        scalar(
            """SELECT count(*) FROM (
               SELECT c.industry_id, er.year, count(*) AS n
                 FROM emission_records er JOIN companies c ON c.id = er.company_id
                WHERE c.is_public AND er.verification_status <> 'rejected'
                GROUP BY 1, 2) v
             FULL JOIN industry_benchmarks b
               ON b.industry_id = v.industry_id AND b.year = v.year
            WHERE b.company_count IS DISTINCT FROM v.n"""
        )
        == 0
    )
    assert (
        scalar(
            "SELECT count(*) FROM industry_benchmarks"
            " WHERE NOT (p25 <= median AND median <= p75 AND mean > 0 AND company_count > 0)"
        )
        == 0
    )


def test_command_refuses_when_data_exists_and_if_empty_is_a_no_op():
    call_command("seed_demo", "--companies", "60", "--no-progress", stdout=StringIO())
    before = digests()

    with pytest.raises(CommandError, match="--replace"):
        call_command("seed_demo", "--companies", "60", "--seed", "1", "--no-progress")
    out = StringIO()
    call_command("seed_demo", "--companies", "80", "--seed", "1", "--if-empty", stdout=out)
    assert "nothing loaded" in out.getvalue()
    assert digests() == before


def test_command_if_empty_loads_into_an_empty_database_and_replace_reloads():
    out = StringIO()
    call_command("seed_demo", "--companies", "60", "--if-empty", "--no-progress", stdout=out)
    assert re.search(
        r"60 companies, [\d,]+ emission records, [\d,]+ benchmarks in [\d.]+ s", out.getvalue()
    )
    call_command("seed_demo", "--companies", "90", "--replace", "--no-progress", stdout=out)
    assert scalar("SELECT count(*) FROM companies") == 90


def test_command_takes_the_company_count_from_the_setting(settings):
    settings.DEMO_COMPANIES = 70
    call_command("seed_demo", "--years", "2", "--no-progress", stdout=StringIO())
    assert scalar("SELECT count(*) FROM companies") == 70
    assert scalar("SELECT min(year) FROM emission_records") == 2023


def test_command_rejects_both_if_empty_and_replace():
    with pytest.raises(CommandError):
        call_command("seed_demo", "--companies", "10", "--if-empty", "--replace")


def _rows(sql: str, params: tuple = ()) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()
