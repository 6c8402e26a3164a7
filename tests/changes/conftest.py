"""Fixtures for the change pipeline: a small world written with raw SQL."""

import json
from decimal import Decimal

import pytest
from django.db import connection


def sql(statement: str, params: list | tuple | None = None) -> list[tuple]:
    """Run raw SQL on Django's connection; rows if it returns any."""
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])
        return cursor.fetchall() if cursor.description else []


def change_rows(**filters) -> list[dict]:
    """data_changes rows in capture order, jsonb decoded."""
    where = " AND ".join(f"{key} = %s" for key in filters) or "TRUE"
    rows = sql(
        "SELECT entity, record_id, change_type, changed_columns, change_data, routing, seq,"
        f" contexts, significance FROM data_changes WHERE {where} AND entity <> 'aggregate'"
        " ORDER BY capture_id",
        list(filters.values()),
    )
    keys = (
        "entity",
        "record_id",
        "change_type",
        "changed_columns",
        "change_data",
        "routing",
        "seq",
        "contexts",
        "significance",
    )
    out = []
    for row in rows:
        item = dict(zip(keys, row, strict=True))
        item["change_data"] = json.loads(item["change_data"], parse_float=Decimal)
        item["routing"] = json.loads(item["routing"], parse_float=Decimal)
        out.append(item)
    return out


@pytest.fixture
def world(db):
    """Two industries, three companies (one not public), records for 2023 and 2024."""
    steel, software = sql(
        "INSERT INTO industries (slug, name, sector) VALUES ('steel', 'Steel', 'Materials'),"
        " ('software', 'Software', 'Technology') RETURNING id"
    )
    steel, software = steel[0], software[0]
    acme, beta, hidden = (
        row[0]
        for row in sql(
            "INSERT INTO companies (name, country, industry_id, is_public, verification_status)"
            " VALUES ('Acme Steel', 'DE', %s, true, 'verified'),"
            " ('Beta Soft', 'FR', %s, true, 'pending'),"
            " ('Hidden Steel', 'DE', %s, false, 'verified') RETURNING id",
            [steel, software, steel],
        )
    )
    sql(
        "INSERT INTO emission_records (company_id, year, scope1_tonnes, scope2_tonnes,"
        " scope3_tonnes, verification_status) VALUES"
        " (%s, 2023, 100, 10, 1, 'verified'), (%s, 2024, 200, 20, 2, 'verified'),"
        " (%s, 2024, 50, 5, 0, 'pending'), (%s, 2024, 999, 0, 0, 'verified')",
        [acme, acme, beta, hidden],
    )
    return {
        "steel": steel,
        "software": software,
        "acme": acme,
        "beta": beta,
        "hidden": hidden,
    }
