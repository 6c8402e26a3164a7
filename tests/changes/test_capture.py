"""The capture triggers, driven by raw SQL: exactly the expected data_changes rows."""

from decimal import Decimal

import pytest

from emissions.models import EMISSION_RECORD_FIELDS
from tests.helpers import change_rows, sql

pytestmark = pytest.mark.django_db


def test_raw_insert_records_every_column(world):
    rows = change_rows(entity="emission_record")
    assert len(rows) == 4
    first = next(row for row in rows if row["change_data"]["new"]["year"] == 2023)
    assert first["change_type"] == "insert"
    assert first["changed_columns"] == ["company_id", *EMISSION_RECORD_FIELDS]
    new = first["change_data"]["new"]
    assert new["year"] == 2023
    assert new["total_tonnes"] == Decimal("111.000")
    assert "old" not in first["change_data"]
    assert first["routing"]["industry_id"] == str(world["steel"])
    assert first["routing"]["company_public"] is True
    assert first["seq"] is None


def test_raw_update_records_only_changed_columns_with_old_and_new(world):
    sql("DELETE FROM data_changes")
    sql(
        "UPDATE emission_records SET scope1_tonnes = 150 WHERE company_id = %s AND year = 2023",
        [world["acme"]],
    )
    [row] = change_rows()
    assert row["change_type"] == "update"
    assert row["changed_columns"] == ["scope1_tonnes", "total_tonnes"]
    assert row["change_data"] == {
        "old": {"scope1_tonnes": Decimal("100.000"), "total_tonnes": Decimal("111.000")},
        "new": {"scope1_tonnes": Decimal("150.000"), "total_tonnes": Decimal("161.000")},
    }


def test_raw_delete_records_the_old_row(world):
    sql("DELETE FROM data_changes")
    sql("DELETE FROM emission_records WHERE company_id = %s", [world["beta"]])
    [row] = change_rows()
    assert row["change_type"] == "delete"
    assert row["changed_columns"] == []
    assert row["change_data"]["old"]["scope1_tonnes"] == Decimal("50.000")
    assert row["routing"]["company_id"] == str(world["beta"])


def test_no_op_updates_record_nothing(world):
    sql("DELETE FROM data_changes")
    sql("UPDATE emission_records SET scope1_tonnes = scope1_tonnes")
    sql("UPDATE companies SET name = name, updated_at = now()")
    sql("UPDATE industry_benchmarks SET median = median")
    assert change_rows() == []


def test_company_updates_ignore_timestamps_and_rollups(world):
    sql("DELETE FROM data_changes")
    # Moves latest_total_tonnes through the rollup trigger, and updated_at by hand.
    sql("UPDATE companies SET updated_at = now() - interval '1 day'")
    sql("UPDATE emission_records SET scope2_tonnes = scope2_tonnes + 1 WHERE year = 2024")
    rows = change_rows()
    assert {row["entity"] for row in rows} == {"emission_record"}
    assert len(rows) == 3


def test_bulk_update_of_ten_thousand_rows_is_captured_row_by_row(world):
    sql(
        "INSERT INTO companies (name, country, industry_id)"
        " SELECT 'Bulk ' || n, 'NL', %s FROM generate_series(1, 2500) AS n",
        [world["software"]],
    )
    sql(
        "INSERT INTO emission_records (company_id, year, scope1_tonnes)"
        " SELECT c.id, y, 1 FROM companies c CROSS JOIN generate_series(2021, 2024) AS y"
        " WHERE c.name LIKE 'Bulk %%'"
    )
    sql("DELETE FROM data_changes")
    sql(
        "UPDATE emission_records SET scope3_tonnes = 7 WHERE company_id IN"
        " (SELECT id FROM companies WHERE name LIKE 'Bulk %%')"
    )
    rows = change_rows()
    assert len(rows) == 10_000
    assert all(row["changed_columns"] == ["scope3_tonnes", "total_tonnes"] for row in rows)
    assert all(row["change_data"]["new"]["scope3_tonnes"] == 7 for row in rows)
    assert len({row["record_id"] for row in rows}) == 10_000


def test_copy_is_captured(world):
    sql("DELETE FROM data_changes")
    from django.db import connection

    with connection.cursor() as cursor:
        raw = cursor.cursor
        with raw.copy("COPY emission_records (company_id, year, scope1_tonnes) FROM STDIN") as copy:
            copy.write_row((str(world["beta"]), 2022, 5))
            copy.write_row((str(world["beta"]), 2021, 6))
    rows = change_rows()
    assert [row["change_type"] for row in rows] == ["insert", "insert"]
    assert sorted(row["change_data"]["new"]["year"] for row in rows) == [2021, 2022]


def test_orm_saves_are_captured(world):
    from emissions.models import Company

    sql("DELETE FROM data_changes")
    company = Company.objects.get(pk=world["acme"])
    company.save()  # nothing changed but updated_at: not a change
    company.data_quality_score = Decimal("55.50")
    company.save()
    [row] = change_rows()
    assert row["changed_columns"] == ["data_quality_score"]
    assert row["change_data"]["new"] == {"data_quality_score": Decimal("55.50")}


def test_visibility_change_carries_the_full_row_and_the_records(world):
    sql("DELETE FROM data_changes")
    sql("UPDATE companies SET is_public = true WHERE id = %s", [world["hidden"]])
    [row] = change_rows()
    routing = row["routing"]
    assert routing["old_is_public"] is False and routing["is_public"] is True
    assert routing["row"]["name"] == "Hidden Steel"
    assert [record["total_tonnes"] for record in routing["records"]] == [Decimal("999.000")]


def test_benchmark_changes_are_captured(world):
    sql(
        "INSERT INTO industry_benchmarks (industry_id, year, metric, p25, median, p75, mean,"
        " company_count) VALUES (%s, 2024, 'total_tonnes', 1, 2, 3, 2, 3)",
        [world["steel"]],
    )
    sql("UPDATE industry_benchmarks SET median = 2.5")
    rows = change_rows(entity="industry_benchmark")
    assert [row["change_type"] for row in rows] == ["insert", "update"]
    assert rows[1]["changed_columns"] == ["median"]
    assert rows[1]["routing"] == {
        "industry_id": str(world["steel"]),
        "year": 2024,
        "metric": "total_tonnes",
    }


def test_tracked_columns_are_not_null(db):
    """The UPDATE capture compares with `<>` and strips NULLs: it needs NOT NULL columns."""
    from emissions.models import BENCHMARK_CAPTURE, COMPANY_CAPTURE, EMISSION_RECORD_CAPTURE

    for spec in (COMPANY_CAPTURE, EMISSION_RECORD_CAPTURE, BENCHMARK_CAPTURE):
        nullable = sql(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = %s AND column_name = ANY(%s) AND is_nullable = 'YES'"
            # total_tonnes is generated from three NOT NULL columns.
            " AND is_generated = 'NEVER'",
            [spec.table, list(spec.columns)],
        )
        assert nullable == [], spec.table


def test_the_ignore_check_is_ours_without_a_subtransaction(db):
    """post_migrate replaced pgtrigger's ignore check (an EXCEPTION block, so a
    subtransaction per trigger call) with the plain SQL one."""
    [(language, source)] = sql(
        "SELECT l.lanname, p.prosrc FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang"
        " WHERE p.proname = '_pgtrigger_should_ignore'"
    )
    assert language == "sql"
    assert "EXCEPTION" not in source.upper()


@pytest.mark.django_db(transaction=True)
def test_paused_capture_skips_the_transaction_and_only_it(world):
    from django.db import connection, transaction

    from changes.capture import capture_pause_in_transaction

    sql("DELETE FROM data_changes")
    with transaction.atomic(), connection.cursor() as cursor:
        capture_pause_in_transaction(cursor)
        cursor.execute("UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1")
    assert change_rows() == []
    # The setting was local: empty now, and an empty setting ignores nothing.
    assert sql("SELECT current_setting('pgtrigger.ignore', true)") == [("",)]
    sql("UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1")
    assert len(change_rows(entity="emission_record")) == 4


def test_pgtriggers_own_ignore_still_works(world):
    import pgtrigger

    sql("DELETE FROM data_changes")
    with pgtrigger.ignore("emissions.EmissionRecord:capture_emission_record_update"):
        sql("UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1")
    assert change_rows() == []
    sql("UPDATE emission_records SET scope2_tonnes = scope2_tonnes + 1")
    assert {row["change_type"] for row in change_rows()} == {"update"}


def test_change_ids_are_time_ordered_version_7_uuids(world):
    """New log rows land at the right end of the primary-key index."""
    import uuid

    sql("UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1")
    ids = [uuid.UUID(str(row[0])) for row in sql("SELECT id FROM data_changes ORDER BY capture_id")]
    assert len(ids) >= 8
    assert {i.version for i in ids} == {7}
    milliseconds = [int(i.hex[:12], 16) for i in ids]
    assert milliseconds == sorted(milliseconds)
