"""Staff edits of the refresh policies (the admin and `PUT /api/preferences/policies`):
validated as a whole, audited per changed pair, and announced to every open connection
once committed."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction
from django.db.models.functions import Now

from common.audit import POLICY_EDIT, audit
from common.errors import ApplicationError
from preferences.models import (
    POLICY_MAX_DEBOUNCE_MS,
    POLICY_MAX_DELIVERIES_PER_MINUTE,
    POLICY_MAX_INTERVAL_MS,
    Category,
    RefreshPolicy,
    Transport,
    UserType,
)
from preferences.selectors import (
    POLICY_FIELDS,
    policy_values_of,
    refresh_policy_table_forget,
    refresh_policy_table_load,
)
from preferences.services import (
    SCOPE_POLICY,
    FieldErrors,
    connections_notify,
    is_int,
    short_name,
)

# Most policy items one PUT may carry: 16 pairs exist; more can only be repeats or junk.
POLICY_ITEMS_MAX = 16


class PolicyInvalid(ApplicationError):
    """A policy edit that cannot be stored; `detail` maps fields to reasons."""

    code = "invalid_policy"


def refresh_policy_values_check(values: dict) -> dict[str, list[str]]:
    """Why a complete set of policy values cannot be stored (field: reasons); empty when
    it can. The same rules as the table's constraints, in words."""
    errors = FieldErrors()
    for name in ("min_interval_ms", "default_interval_ms"):
        value = values.get(name)
        if not is_int(value) or not 0 <= value <= POLICY_MAX_INTERVAL_MS:
            errors.add(name, f"An integer from 0 to {POLICY_MAX_INTERVAL_MS} (ms).")
    deliveries = values.get("max_deliveries_per_minute")
    if not is_int(deliveries) or not 1 <= deliveries <= POLICY_MAX_DELIVERIES_PER_MINUTE:
        errors.add(
            "max_deliveries_per_minute",
            f"An integer from 1 to {POLICY_MAX_DELIVERIES_PER_MINUTE}.",
        )
    debounce = values.get("debounce_ms")
    if not is_int(debounce) or not 0 <= debounce <= POLICY_MAX_DEBOUNCE_MS:
        errors.add("debounce_ms", f"An integer from 0 to {POLICY_MAX_DEBOUNCE_MS} (ms).")
    transports = values.get("allowed_transports")
    if (
        not isinstance(transports, list | tuple)
        or not transports
        or not all(isinstance(t, str) and t in Transport.values for t in transports)
        or len(set(transports)) != len(transports)
    ):
        errors.add(
            "allowed_transports",
            f"A non-empty list without repeats of {', '.join(Transport.values)}.",
        )
    realtime = values.get("realtime_allowed")
    if not isinstance(realtime, bool):
        errors.add("realtime_allowed", "Must be true or false.")
    if errors:
        return errors.by_field
    default, minimum = values["default_interval_ms"], values["min_interval_ms"]
    if default == 0 and not realtime:
        errors.add(
            "default_interval_ms",
            "0 (real time) needs realtime_allowed; give an interval of at least the minimum.",
        )
    elif default != 0 and default < minimum:
        errors.add(
            "default_interval_ms",
            f"At least min_interval_ms ({minimum}), or 0 for real time.",
        )
    return errors.by_field


def _policy_items_validate(document: Any) -> list[dict]:
    """The items of `PUT /api/admin/refresh-policies`, shape-checked."""
    if not isinstance(document, dict) or set(document) != {"policies"}:
        raise PolicyInvalid({"non_field_errors": ['Send {"policies": [...]}.']})
    items = document["policies"]
    if not isinstance(items, list) or not 1 <= len(items) <= POLICY_ITEMS_MAX:
        raise PolicyInvalid({"policies": [f"A list of 1 to {POLICY_ITEMS_MAX} policy objects."]})
    errors = FieldErrors()
    seen: set[tuple] = set()
    allowed = {"user_type", "category", *POLICY_FIELDS}
    for index, item in enumerate(items):
        path = f"policies[{index}]"
        if not isinstance(item, dict):
            errors.add(path, "A policy object.")
            continue
        unknown = sorted(short_name(key) for key in item if key not in allowed)
        if unknown:
            errors.add(path, f"Unknown field(s): {', '.join(unknown)}.")
        user_type, category = item.get("user_type"), item.get("category")
        if not isinstance(user_type, str) or user_type not in UserType.values:
            errors.add(f"{path}.user_type", f"One of {', '.join(UserType.values)}.")
        if not isinstance(category, str) or category not in Category.values:
            errors.add(f"{path}.category", f"One of {', '.join(Category.values)}.")
        if isinstance(user_type, str) and isinstance(category, str):
            if (user_type, category) in seen:
                errors.add(path, "The same user type and category appear twice.")
            seen.add((user_type, category))
        if not set(item) & set(POLICY_FIELDS):
            errors.add(path, f"Name at least one of {', '.join(POLICY_FIELDS)}.")
    if errors:
        raise PolicyInvalid(errors.by_field)
    return items


@transaction.atomic
def refresh_policies_update(*, actor: Any, document: Any, via: str = "api") -> list[dict]:
    """Change the policies a PUT names (fields left out keep their value), record each
    changed one in the audit log (policy_edit, with before and after), and once committed
    make every open connection re-resolve its policy. Returns the changed policies.

    Locks the edited rows, so two concurrent edits of one policy apply one after the
    other, each validated against what the other left.
    """
    items = _policy_items_validate(document)
    table = refresh_policy_table_load()
    errors = FieldErrors()
    planned = []
    for index, item in enumerate(items):
        key = (item["user_type"], item["category"])
        row = (
            RefreshPolicy.objects.select_for_update()
            .filter(user_type=key[0], category=key[1])
            .first()
        )
        before = policy_values_of(row).as_dict() if row is not None else table[key].as_dict()
        after = {**before, **{name: item[name] for name in POLICY_FIELDS if name in item}}
        for name, reasons in refresh_policy_values_check(after).items():
            for reason in reasons:
                errors.add(f"policies[{index}].{name}", reason)
        planned.append((key, row, before, after))
    if errors:
        raise PolicyInvalid(errors.by_field)

    changed = []
    for (user_type, category), row, before, after in planned:
        # Stored in the canonical order (websocket, sse, polling), like the table reads.
        after = policy_values_of(after).as_dict()
        if after == before:
            continue  # nothing to change, audit or announce
        if row is None:
            row = RefreshPolicy(user_type=user_type, category=category)
        for name, value in after.items():
            setattr(row, name, value)
        row.updated_at = Now()
        row.save()
        audit(
            actor=actor,
            action=POLICY_EDIT,
            target=f"{user_type}/{category}",
            details={
                "via": via,
                "before": before,
                "after": after,
                "changed": sorted(k for k in after if after[k] != before.get(k)),
            },
        )
        changed.append({"user_type": user_type, "category": category, **after})
    if changed:
        transaction.on_commit(_policies_changed)
    return changed


def _policies_changed() -> None:
    refresh_policy_table_forget()
    connections_notify({"scope": SCOPE_POLICY, "version": uuid.uuid4().hex}, None)
