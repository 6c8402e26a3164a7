"""The running totals a batch moves: its deltas added to aggregate_totals in one
statement, and the `aggregate` changes that tell the overview and industry contexts which
totals moved (published with the batch, like any captured change)."""

from __future__ import annotations

from decimal import Decimal

from changes.aggregates import COUNTERS, MEASURES, PLATFORM, AggregateKey
from changes.contexts import OVERVIEW, industry_context
from changes.items import CapturedChange


def _aggregate_contexts(scope: str) -> list[str]:
    if scope == PLATFORM:
        return [OVERVIEW]
    return [OVERVIEW, industry_context(scope.removeprefix("industry:"))]


def _aggregate_id(scope: str, year: int | None) -> str:
    return scope if year is None else f"{scope}:{year}"


def aggregates_apply(cursor, moved: dict[AggregateKey, dict[str, Decimal]]) -> list[tuple]:
    """Add the deltas to aggregate_totals; returns (key, before, after) for each."""
    if not moved:
        return []
    keys = sorted(moved, key=lambda key: (key[0], key[1] is None, key[1] or 0, key[2]))
    rows = [
        (
            scope,
            year,
            audience,
            *[moved[(scope, year, audience)].get(m, Decimal(0)) for m in MEASURES],
            *[int(moved[(scope, year, audience)].get(c, 0)) for c in COUNTERS],
        )
        for scope, year, audience in keys
    ]
    columns = list(zip(*rows, strict=True))
    # One statement for every moved total (sorted keys: upserts lock rows in one order).
    cursor.execute(
        """
        INSERT INTO aggregate_totals AS a (scope, year, audience, total_tonnes, scope1_tonnes,
            scope2_tonnes, scope3_tonnes, reporting_companies, companies)
        SELECT * FROM unnest(%s::text[], %s::int[], %s::text[], %s::numeric[], %s::numeric[],
            %s::numeric[], %s::numeric[], %s::int[], %s::int[])
        ON CONFLICT (scope, year, audience) DO UPDATE SET
            total_tonnes = a.total_tonnes + EXCLUDED.total_tonnes,
            scope1_tonnes = a.scope1_tonnes + EXCLUDED.scope1_tonnes,
            scope2_tonnes = a.scope2_tonnes + EXCLUDED.scope2_tonnes,
            scope3_tonnes = a.scope3_tonnes + EXCLUDED.scope3_tonnes,
            reporting_companies = a.reporting_companies + EXCLUDED.reporting_companies,
            companies = a.companies + EXCLUDED.companies
        RETURNING scope, year, audience, total_tonnes, scope1_tonnes, scope2_tonnes,
            scope3_tonnes, reporting_companies, companies
        """,
        [list(column) for column in columns],
    )
    after_by_key = {
        (row[0], row[1], row[2]): dict(zip((*MEASURES, *COUNTERS), row[3:], strict=True))
        for row in cursor.fetchall()
    }
    results = []
    for key in keys:
        after = after_by_key[key]
        delta = moved[key]
        before = {name: after[name] - delta.get(name, 0) for name in after}
        results.append((key, before, after))
    return results


def aggregate_change(key: AggregateKey, before: dict, after: dict, at) -> CapturedChange:
    """The `aggregate` change that reports one moved total to its contexts."""
    scope, year, audience = key
    names = ["companies"] if year is None else [*MEASURES, "reporting_companies"]
    changed = [name for name in names if before[name] != after[name]]
    return CapturedChange(
        id=None,
        capture_id=0,
        table_name="aggregate_totals",
        entity="aggregate",
        record_id=_aggregate_id(scope, year),
        change_type="update",
        changed_columns=changed,
        change_data={
            "old": {name: before[name] for name in changed},
            "new": {"scope": scope, "year": year, **{name: after[name] for name in names}},
        },
        routing={},
        created_at=at,
        significance="minor",
        audience=audience,
        contexts=_aggregate_contexts(scope),
    )
