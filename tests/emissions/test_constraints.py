"""The database itself refuses nonsense: raw SQL gets the same rules as the ORM."""

import uuid
from decimal import Decimal

import pytest
from django.db import DataError, IntegrityError, connection, transaction

pytestmark = pytest.mark.django_db


def run(sql: str, params: list | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def industry_id() -> uuid.UUID:
    return run(
        "INSERT INTO industries (slug, name, sector) VALUES ('steel', 'Steel', 'Materials')"
        " RETURNING id"
    )[0][0]


@pytest.fixture
def company_id(industry_id) -> uuid.UUID:
    return run(
        "INSERT INTO companies (name, country, industry_id) VALUES ('Acme Steel', 'DE', %s)"
        " RETURNING id",
        [industry_id],
    )[0][0]


def assert_rejected(sql: str, params: list) -> None:
    with pytest.raises((IntegrityError, DataError)), transaction.atomic():
        # Foreign keys are deferred to commit; check them at the statement instead.
        run("SET CONSTRAINTS ALL IMMEDIATE")
        run(sql, params)


def test_raw_sql_company_gets_database_defaults(company_id):
    is_public, status, score, created_at, updated_at = run(
        "SELECT is_public, verification_status, data_quality_score, created_at, updated_at"
        " FROM companies WHERE id = %s",
        [company_id],
    )[0]
    assert (is_public, status, score) == (True, "pending", Decimal("0"))
    assert created_at is not None and updated_at is not None


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("verification_status", "approved"),
        ("data_quality_score", 100.5),
        ("data_quality_score", -1),
        ("country", "Germany"),
        ("country", "de"),
        ("name", ""),
    ],
)
def test_bad_company_values_are_rejected(industry_id, column, value):
    row = {"name": "X", "country": "DE", "industry_id": industry_id, column: value}
    columns = ", ".join(row)
    placeholders = ", ".join(["%s"] * len(row))
    assert_rejected(
        f"INSERT INTO companies ({columns}) VALUES ({placeholders})", list(row.values())
    )


def test_company_needs_an_existing_industry():
    assert_rejected(
        "INSERT INTO companies (name, country, industry_id) VALUES ('X', 'DE', %s)", [uuid.uuid4()]
    )


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("scope1_tonnes", -0.001),
        ("scope2_tonnes", -5),
        ("scope3_tonnes", -1),
        ("year", 1800),
        ("year", 2500),
        ("verification_status", "unknown"),
    ],
)
def test_bad_emission_values_are_rejected(company_id, column, value):
    row = {"company_id": company_id, "year": 2024, column: value}
    columns = ", ".join(row)
    placeholders = ", ".join(["%s"] * len(row))
    assert_rejected(
        f"INSERT INTO emission_records ({columns}) VALUES ({placeholders})", list(row.values())
    )


def test_one_record_per_company_and_year(company_id):
    run("INSERT INTO emission_records (company_id, year) VALUES (%s, 2024)", [company_id])
    assert_rejected(
        "INSERT INTO emission_records (company_id, year) VALUES (%s, 2024)", [company_id]
    )


def test_emission_record_needs_an_existing_company():
    assert_rejected(
        "INSERT INTO emission_records (company_id, year) VALUES (%s, 2024)", [uuid.uuid4()]
    )


def test_total_is_generated_by_the_database(company_id):
    record_id = run(
        "INSERT INTO emission_records (company_id, year, scope1_tonnes, scope2_tonnes,"
        " scope3_tonnes) VALUES (%s, 2024, 1.5, 2.25, 3) RETURNING id",
        [company_id],
    )[0][0]
    assert run("SELECT total_tonnes FROM emission_records WHERE id = %s", [record_id]) == [
        (Decimal("6.750"),)
    ]
    run("UPDATE emission_records SET scope2_tonnes = 10 WHERE id = %s", [record_id])
    assert run("SELECT total_tonnes FROM emission_records WHERE id = %s", [record_id]) == [
        (Decimal("14.500"),)
    ]
    with pytest.raises(Exception, match="generated"), transaction.atomic():
        run("UPDATE emission_records SET total_tonnes = 1 WHERE id = %s", [record_id])


def test_latest_total_follows_raw_sql_writes_once_published(company_id):
    from changes.publisher import change_batch_publish

    def latest():
        change_batch_publish()
        return run(
            "SELECT latest_year, latest_total_tonnes FROM companies WHERE id = %s", [company_id]
        )[0]

    assert latest() == (None, None)
    run(
        "INSERT INTO emission_records (company_id, year, scope1_tonnes) VALUES"
        " (%s, 2022, 10), (%s, 2023, 20)",
        [company_id, company_id],
    )
    assert latest() == (2023, Decimal("20.000"))
    run(
        "UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1 WHERE company_id = %s",
        [company_id],
    )
    assert latest() == (2023, Decimal("21.000"))
    # A rejected record does not count as the company's latest figure.
    run("UPDATE emission_records SET verification_status = 'rejected' WHERE year = 2023")
    assert latest() == (2022, Decimal("11.000"))
    run("DELETE FROM emission_records WHERE company_id = %s", [company_id])
    assert latest() == (None, None)


@pytest.mark.parametrize(
    ("p25", "median", "p75", "count"),
    [(3, 2, 4, 1), (1, 5, 4, 1), (1, 2, 3, -1)],
)
def test_bad_benchmarks_are_rejected(industry_id, p25, median, p75, count):
    assert_rejected(
        "INSERT INTO industry_benchmarks (industry_id, year, metric, p25, median, p75, mean,"
        " company_count) VALUES (%s, 2024, 'total_tonnes', %s, %s, %s, 2, %s)",
        [industry_id, p25, median, p75, count],
    )


def test_one_benchmark_per_industry_year_metric(industry_id):
    sql = (
        "INSERT INTO industry_benchmarks (industry_id, year, metric, p25, median, p75, mean,"
        " company_count) VALUES (%s, 2024, 'total_tonnes', 1, 2, 3, 2, 3)"
    )
    run(sql, [industry_id])
    assert_rejected(sql, [industry_id])


def test_industry_slug_is_unique_and_well_formed(industry_id):
    assert_rejected("INSERT INTO industries (slug, name, sector) VALUES ('steel', 'S', 'M')", [])
    assert_rejected("INSERT INTO industries (slug, name, sector) VALUES ('Bad Slug', 'S', 'M')", [])
