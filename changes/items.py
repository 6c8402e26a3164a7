"""Change items: the one typed shape every transport, the catch-up and the tests share.

A captured change (a `data_changes` row) becomes one item per context it touches and
audience that may see it. Redaction happens here, once per audience: anonymous users
never see a non-public company or a `rejected` record; when something becomes invisible
they get a `delete`, when it becomes visible an `insert` with every readable field.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from changes.contexts import COMPANIES, OVERVIEW, company_context, industry_context
from changes.models import AUDIENCE_PUBLIC, AUDIENCE_STAFF, AUDIENCES

SIGNIFICANCE_ORDER = {"minor": 0, "major": 1, "critical": 2}


class ChangeItem(TypedDict):
    """One change as a client sees it (PROTOCOL.md, "The change item")."""

    seq: int
    context: str
    entity: str
    id: str
    op: Literal["insert", "update", "delete"]
    fields: dict[str, Any]
    previous: dict[str, Any]
    changed: list[str]
    at: str
    significance: Literal["minor", "major", "critical"]


class BatchMessage(TypedDict):
    """Changes of one context, ascending seq (PROTOCOL.md, `batch`)."""

    type: Literal["batch"]
    context: str
    seq_from: int
    seq_to: int
    prev_seq: int
    changes: list[ChangeItem]


@dataclass
class CapturedChange:
    """A `data_changes` row as the publisher and the catch-up read it."""

    id: Any
    capture_id: int
    table_name: str
    entity: str
    record_id: str
    change_type: str
    changed_columns: list[str]
    change_data: dict[str, Any]
    routing: dict[str, Any]
    created_at: dt.datetime
    seq: int | None = None
    significance: str | None = None
    audience: str | None = None
    contexts: list[str] = field(default_factory=list)
    at: str | None = None


# Columns renamed for clients: the REST API calls an industry by its slug.
_INDUSTRY_COLUMN = "industry_id"


def format_at(moment: dt.datetime) -> str:
    """UTC, ISO 8601 with milliseconds and a Z."""
    moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _client_values(values: dict[str, Any], slugs: dict[str, str]) -> dict[str, Any]:
    """Column values as a client names them: industry_id becomes `industry` (a slug)."""
    if _INDUSTRY_COLUMN not in values:
        return dict(values)
    out = {key: value for key, value in values.items() if key != _INDUSTRY_COLUMN}
    industry_id = values[_INDUSTRY_COLUMN]
    out["industry"] = slugs.get(str(industry_id)) if industry_id is not None else None
    return out


def _client_changed(columns: list[str]) -> list[str]:
    return ["industry" if column == _INDUSTRY_COLUMN else column for column in columns]


def _placement_keys(change: CapturedChange, slugs: dict[str, str]) -> dict[str, Any]:
    """The keys a client needs to place an updated record in its store."""
    routing = change.routing
    if change.entity == "emission_record":
        return {"company_id": routing.get("company_id"), "year": routing.get("year")}
    if change.entity == "industry_benchmark":
        return {
            "industry": slugs.get(str(routing.get("industry_id"))),
            "year": routing.get("year"),
            "metric": routing.get("metric"),
        }
    return {}


def _full_row(change: CapturedChange) -> dict[str, Any] | None:
    """Every recorded column of the row after the change, where the capture kept it."""
    if change.change_type == "insert":
        return change.change_data.get("new", {})
    return change.routing.get("row")


def _item(
    change: CapturedChange, context: str, op: str, fields: dict, previous: dict, changed: list
) -> ChangeItem:
    if change.at is None:
        change.at = format_at(change.created_at)  # once per change, not once per item
    return {
        "seq": change.seq,
        "context": context,
        "entity": change.entity,
        "id": str(change.record_id),
        "op": op,
        "fields": fields,
        "previous": previous,
        "changed": changed,
        "at": change.at,
        "significance": change.significance or "minor",
    }


def _insert_item(change: CapturedChange, context: str, slugs: dict[str, str]) -> ChangeItem:
    row = _full_row(change) or {}
    fields = _client_values(row, slugs)
    return _item(change, context, "insert", fields, {}, sorted(fields))


def _delete_item(change: CapturedChange, context: str) -> ChangeItem:
    return _item(change, context, "delete", {}, {}, [])


def _as_is_item(change: CapturedChange, context: str, slugs: dict[str, str]) -> ChangeItem:
    if change.change_type == "insert":
        return _insert_item(change, context, slugs)
    if change.change_type == "delete":
        return _delete_item(change, context)
    fields = {
        **_placement_keys(change, slugs),
        **_client_values(change.change_data.get("new", {}), slugs),
    }
    previous = _client_values(change.change_data.get("old", {}), slugs)
    return _item(
        change, context, "update", fields, previous, _client_changed(change.changed_columns)
    )


def public_visibility(change: CapturedChange) -> tuple[bool, bool]:
    """Whether anonymous users could see the record (before, after) this change."""
    routing, old = change.routing, change.change_data.get("old", {})
    if change.entity == "company":
        if change.change_type == "insert":
            return False, bool(routing.get("is_public"))
        if change.change_type == "delete":
            return bool(old.get("is_public")), False
        return bool(routing.get("old_is_public")), bool(routing.get("is_public"))
    if change.entity == "emission_record":
        company_public = bool(routing.get("company_public"))
        status_after = routing.get("verification_status")
        status_before = old.get("verification_status", status_after)
        visible_before = company_public and status_before != "rejected"
        visible_after = company_public and status_after != "rejected"
        if change.change_type == "insert":
            return False, visible_after
        if change.change_type == "delete":
            return visible_before, False
        return visible_before, visible_after
    return change.change_type != "insert", change.change_type != "delete"


def _transition_item(
    change: CapturedChange,
    context: str,
    slugs: dict[str, str],
    before: bool,
    after: bool,
) -> ChangeItem | None:
    """The item for a view that held the record `before` and holds it `after`."""
    if before and after:
        return _as_is_item(change, context, slugs)
    if before:
        return _delete_item(change, context)
    if after:
        return _insert_item(change, context, slugs)
    return None


def change_contexts(change: CapturedChange, slugs: dict[str, str]) -> list[str]:
    """Every context the change touches (PROTOCOL.md, "context"), audience aside."""
    routing = change.routing
    significant = SIGNIFICANCE_ORDER.get(change.significance or "minor", 0) >= 1
    contexts: list[str] = []
    if change.entity == "company":
        contexts.append(company_context(change.record_id))
        for key in ("industry_id", "old_industry_id"):
            slug = slugs.get(str(routing.get(key)))
            if slug and industry_context(slug) not in contexts:
                contexts.append(industry_context(slug))
        contexts.append(COMPANIES)
        if change.change_type == "insert" or significant:
            contexts.append(OVERVIEW)
    elif change.entity == "emission_record":
        contexts.append(company_context(routing["company_id"]))
        moved_from = change.change_data.get("old", {}).get("company_id")
        if moved_from:
            contexts.append(company_context(moved_from))
        for key in ("industry_id", "old_industry_id"):
            slug = slugs.get(str(routing.get(key)))
            if slug and industry_context(slug) not in contexts:
                contexts.append(industry_context(slug))
        if significant:
            contexts.append(OVERVIEW)
    elif change.entity == "industry_benchmark":
        slug = slugs.get(str(routing.get("industry_id")))
        if slug:
            contexts.append(industry_context(slug))
        if significant:
            contexts.append(OVERVIEW)
    elif change.entity == "aggregate":
        contexts.extend(change.contexts)
    return contexts


def _membership(change: CapturedChange, context: str, slugs: dict[str, str]) -> tuple[bool, bool]:
    """Whether the record belonged to `context` before and after (moves between
    industries or companies)."""
    routing = change.routing
    if change.entity == "emission_record" and context.startswith("company:"):
        after = str(routing.get("company_id"))
        before = str(change.change_data.get("old", {}).get("company_id", after))
        return context == company_context(before), context == company_context(after)
    if change.entity == "emission_record" and context.startswith("industry:"):
        after = slugs.get(str(routing.get("industry_id")))
        before = slugs.get(str(routing.get("old_industry_id") or routing.get("industry_id")))
        return context == industry_context(before or ""), context == industry_context(after or "")
    if change.entity != "company" or not context.startswith("industry:"):
        return True, True
    old_slug = slugs.get(str(routing.get("old_industry_id", routing.get("industry_id"))))
    new_slug = slugs.get(str(routing.get("industry_id")))
    if change.change_type == "delete":
        old_slug = slugs.get(str(change.change_data.get("old", {}).get("industry_id")))
    return context == industry_context(old_slug or ""), context == industry_context(new_slug or "")


def change_item(
    change: CapturedChange, context: str, audience: str, slugs: dict[str, str]
) -> ChangeItem | None:
    """The item one (context, audience) receives for this change, or None."""
    if change.entity == "aggregate":
        if (change.audience or AUDIENCE_STAFF) != audience or context not in change.contexts:
            return None
        return {**_as_is_item(change, context, slugs), "context": context}
    if context == COMPANIES and change.entity != "company":
        return None
    if audience == AUDIENCE_PUBLIC:
        before, after = public_visibility(change)
    else:
        before, after = change.change_type != "insert", change.change_type != "delete"
    member_before, member_after = _membership(change, context, slugs)
    return _transition_item(
        change, context, slugs, before and member_before, after and member_after
    )


def change_items(
    change: CapturedChange, slugs: dict[str, str]
) -> dict[tuple[str, str], ChangeItem]:
    """The item each (context, audience) receives for this change; absent means nothing."""
    # Aggregate rows exist once per audience; captured changes are redacted per audience.
    aggregate = change.entity == "aggregate"
    audiences = (change.audience or AUDIENCE_STAFF,) if aggregate else AUDIENCES
    out: dict[tuple[str, str], ChangeItem] = {}
    for context in change.contexts or change_contexts(change, slugs):
        for audience in audiences:
            item = change_item(change, context, audience, slugs)
            if item is not None:
                out[(context, audience)] = item
    return out


def items_coalesce(items: list[ChangeItem]) -> list[ChangeItem]:
    """Merge repeated changes of one record: highest seq, union of `changed`, earliest
    `previous`, latest `fields` (PROTOCOL.md). Keeps ascending seq order."""
    merged: dict[tuple[str, str], ChangeItem] = {}
    for item in items:
        key = (item["entity"], item["id"])
        first = merged.get(key)
        if first is None:
            merged[key] = item
            continue
        if item["op"] == "delete":
            op = "delete"
        elif first["op"] in ("insert", "delete"):
            op = "insert" if first["op"] == "insert" or item["op"] == "insert" else item["op"]
        else:
            op = item["op"]
        changed = list(dict.fromkeys([*first["changed"], *item["changed"]]))
        previous = {**item["previous"], **first["previous"]}
        fields = {**first["fields"], **item["fields"]}
        if op == "delete":
            fields, previous, changed = {}, {}, []
        elif op == "insert":
            previous = {}
        significance = max(
            first["significance"], item["significance"], key=SIGNIFICANCE_ORDER.__getitem__
        )
        # Re-inserting moves the record to its latest position in seq order.
        del merged[key]
        merged[key] = {
            **item,
            "op": op,
            "fields": fields,
            "previous": previous,
            "changed": changed,
            "significance": significance,
        }
    return sorted(merged.values(), key=lambda item: item["seq"])
