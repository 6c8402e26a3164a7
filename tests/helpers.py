"""Raw-SQL helpers shared by the tests."""

import json
from decimal import Decimal

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
