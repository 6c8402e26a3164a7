"""Change capture: the database triggers that fill `data_changes`.

One PL/pgSQL template serves every tracked table. Each table declares which columns it
tracks and which routing keys a change must carry; `capture_triggers()` renders three
statement-level AFTER triggers (INSERT, UPDATE, DELETE) over transition tables, so a
statement that touches 100,000 rows runs one `INSERT ... SELECT` into the log instead
of 100,000 trigger calls. PostgreSQL allows transition tables only on single-event
triggers, hence three.

An UPDATE records only the tracked columns whose value changed, with their old and new
values, and nothing at all for a row where none changed. The publisher is woken by a
poll of the partial index on unprocessed changes rather than by NOTIFY: NOTIFY takes a
global lock at commit that serialises every notifying transaction (measured in
docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import pgtrigger
from django.apps import apps
from django.db import connections
from pgtrigger.core import _ignore_func_name


@dataclass(frozen=True)
class CaptureSpec:
    """What one table's capture triggers record.

    `keys` are SQL expressions over the row alias `r` (and `j`, the row of `join`),
    evaluated at capture time so that routing and audience decisions see the world as it
    was when the change was made. `update_keys` may also use `o`, the old row, and
    `{row}`, the full snapshot of the new row. `extra_columns` are recorded with inserts
    and deletes but never compared (timestamps that every save moves).
    """

    table: str
    entity: str
    columns: tuple[str, ...]
    keys: dict[str, str]
    extra_columns: tuple[str, ...] = ()
    join: str = ""
    update_keys: tuple[tuple[str, str], ...] = ()


def _json_object(pairs: dict[str, str]) -> str:
    if not pairs:
        return "'{}'::jsonb"
    # jsonb_build_object takes at most 100 arguments; tracked tables stay far below that.
    body = ", ".join(f"'{name}', {expression}" for name, expression in pairs.items())
    return f"jsonb_build_object({body})"


def _row_snapshot(spec: CaptureSpec, alias: str) -> str:
    # Every recorded column, for inserts and deletes: what a client needs to show or
    # remove the record without asking for it. The id travels as record_id.
    columns = (*spec.columns, *spec.extra_columns)
    return _json_object({column: f"{alias}.{column}" for column in columns})


def _keys(spec: CaptureSpec, *, with_old: bool) -> str:
    pairs = dict(spec.keys)
    if with_old:
        row = _row_snapshot(spec, "r")
        pairs.update({name: sql.replace("{row}", row) for name, sql in spec.update_keys})
    return _json_object(pairs)


def capture_insert_sql(spec: CaptureSpec) -> str:
    """The body of the INSERT trigger: one log row per inserted row."""
    join = spec.join.format(r="r")
    return f"""
        INSERT INTO data_changes (table_name, entity, record_id, change_type, changed_columns,
                                  change_data, routing)
        SELECT '{spec.table}', '{spec.entity}', r.id, 'insert',
               ARRAY[{", ".join(f"'{c}'" for c in spec.columns)}]::text[],
               jsonb_build_object('new', {_row_snapshot(spec, "r")}),
               {_keys(spec, with_old=False)}
          FROM new_rows r {join};
        RETURN NULL;
    """


def capture_delete_sql(spec: CaptureSpec) -> str:
    """The body of the DELETE trigger: one log row per deleted row, with its old values."""
    join = spec.join.format(r="r")
    return f"""
        INSERT INTO data_changes (table_name, entity, record_id, change_type, changed_columns,
                                  change_data, routing)
        SELECT '{spec.table}', '{spec.entity}', r.id, 'delete', ARRAY[]::text[],
               jsonb_build_object('old', {_row_snapshot(spec, "r")}),
               {_keys(spec, with_old=False)}
          FROM old_rows r {join};
        RETURN NULL;
    """


def capture_update_sql(spec: CaptureSpec) -> str:
    """The body of the UPDATE trigger: changed columns only; no-op rows record nothing.

    Tracked columns are NOT NULL (tests/changes/test_capture.py checks), so "changed" is
    a plain `<>` and `jsonb_strip_nulls` drops the unchanged ones: per row a few CASE
    expressions instead of a subquery and an aggregate, which halves the capture cost of
    a 100,000-row UPDATE (docs/benchmarks.md).
    """
    join = spec.join.format(r="r")
    old_tuple = ", ".join(f"o.{c}" for c in spec.columns)
    new_tuple = ", ".join(f"r.{c}" for c in spec.columns)

    def when_changed(column: str, value: str) -> str:
        return f"CASE WHEN o.{column} <> r.{column} THEN {value} END"

    changed = ", ".join(when_changed(c, f"'{c}'") for c in spec.columns)
    old_values = _json_object({c: when_changed(c, f"o.{c}") for c in spec.columns})
    new_values = _json_object({c: when_changed(c, f"r.{c}") for c in spec.columns})
    return f"""
        INSERT INTO data_changes (table_name, entity, record_id, change_type, changed_columns,
                                  change_data, routing)
        SELECT '{spec.table}', '{spec.entity}', r.id, 'update',
               array_remove(ARRAY[{changed}]::text[], NULL),
               jsonb_build_object('old', jsonb_strip_nulls({old_values}),
                                  'new', jsonb_strip_nulls({new_values})),
               {_keys(spec, with_old=True)}
          FROM new_rows r
          JOIN old_rows o ON o.id = r.id
          {join}
         WHERE ({old_tuple}) IS DISTINCT FROM ({new_tuple});
        RETURN NULL;
    """


def capture_triggers(spec: CaptureSpec, *, before_update: str = "") -> list[pgtrigger.Trigger]:
    """The three capture triggers of one table, named `capture_<entity>_<op>`."""
    referencing = {
        "insert": pgtrigger.Referencing(new="new_rows"),
        "update": pgtrigger.Referencing(old="old_rows", new="new_rows"),
        "delete": pgtrigger.Referencing(old="old_rows"),
    }
    bodies = {
        "insert": capture_insert_sql(spec),
        "update": before_update + capture_update_sql(spec),
        "delete": capture_delete_sql(spec),
    }
    operations = {
        "insert": pgtrigger.Insert,
        "update": pgtrigger.Update,
        "delete": pgtrigger.Delete,
    }
    return [
        pgtrigger.Trigger(
            name=f"capture_{spec.entity}_{op}",
            operation=operations[op],
            when=pgtrigger.After,
            level=pgtrigger.Statement,
            referencing=referencing[op],
            func=bodies[op],
        )
        for op in ("insert", "update", "delete")
    ]


def capture_trigger_pgids() -> list[str]:
    """The database names of every capture trigger."""
    return [
        trigger.get_pgid(model)
        for model in apps.get_models()
        for trigger in getattr(model._meta, "triggers", [])
        if trigger.name.startswith("capture_")
    ]


def capture_pause_in_transaction(cursor) -> None:
    """Skip change capture for the rest of the current transaction (bulk loads that are
    followed by a change-log reset). Works on raw psycopg cursors too, for COPY."""
    names = ",".join(capture_trigger_pgids())
    cursor.execute("SELECT set_config('pgtrigger.ignore', %s, true)", ["{" + names + "}"])


# Every trigger of django-pgtrigger first asks `_pgtrigger_should_ignore(TG_NAME)`.
# pgtrigger's own version reads the `pgtrigger.ignore` setting inside a PL/pgSQL block
# with an EXCEPTION clause, and such a block opens a subtransaction on every call: for
# a single-row UPDATE that is most of what capture adds to the statement. This version
# asks for the setting with missing_ok instead (no exception, no subtransaction) and
# answers the same: true only when the trigger is listed. An empty setting (after a
# transaction that set it locally ended) reads as "nothing ignored", as before.
FAST_IGNORE_FUNCTION = """
CREATE OR REPLACE FUNCTION {name}(trigger_name name) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(
        trigger_name = ANY(NULLIF(current_setting('pgtrigger.ignore', true), '')::text[]),
        false
    )
$$
"""


def fast_ignore_function_install(using: str = "default") -> None:
    """Replace pgtrigger's ignore check with the subtransaction-free one. Run after every
    migrate: installing any pgtrigger trigger puts pgtrigger's version back."""
    with connections[using].cursor() as cursor:
        cursor.execute(FAST_IGNORE_FUNCTION.format(name=_ignore_func_name()))
