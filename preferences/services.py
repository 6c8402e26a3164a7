"""Writes of refresh preferences and policies.

Both validate the whole request against the current policies (one clear reason per bad
field, never a database error), write in one transaction, and once it has committed tell
the open connections concerned through the `policy_changed` control message
(realtime/policy.py applies it): a viewer's own connections for a preference, every
connection for a policy.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
import zoneinfo
from functools import cache
from typing import Any

from django.contrib.sessions.models import Session
from django.db import transaction
from django.db.models.functions import Now

from common.audit import POLICY_EDIT, audit
from common.errors import ApplicationError
from common.identity import client_key
from preferences.models import (
    MODE_INTERVAL_MS,
    POLICY_MAX_DEBOUNCE_MS,
    POLICY_MAX_DELIVERIES_PER_MINUTE,
    POLICY_MAX_INTERVAL_MS,
    Category,
    CategoryPreference,
    Mode,
    NotificationThreshold,
    RefreshPolicy,
    RefreshPreference,
    Transport,
    UserType,
)
from preferences.selectors import (
    POLICY_FIELDS,
    PolicyValues,
    PreferenceSnapshot,
    policy_values_of,
    preference_snapshot_of,
    refresh_policy_table_forget,
    refresh_policy_table_load,
    user_type_of,
)
from preferences.signals import policy_changed

logger = logging.getLogger(__name__)

# The control action that re-resolves open connections' policies (realtime/policy.py).
POLICY_CHANGED = "policy_changed"
SCOPE_POLICY = "policy"
SCOPE_PREFERENCES = "preferences"

# Most policy items one PUT may carry: 16 pairs exist; more can only be repeats or junk.
POLICY_ITEMS_MAX = 16
# "HH:MM", 00:00 to 23:59.
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
# Longest IANA zone name in use is 32 characters (America/Argentina/ComodRivadavia).
TIMEZONE_MAX_LENGTH = 64


class PreferencesInvalid(ApplicationError):
    """A preferences document that cannot be stored; `detail` maps fields to reasons."""

    code = "invalid_preferences"


class PolicyInvalid(ApplicationError):
    """A policy edit that cannot be stored; `detail` maps fields to reasons."""

    code = "invalid_policy"


class _Errors:
    """Reasons collected per field path, so one answer names every problem."""

    def __init__(self) -> None:
        self.by_field: dict[str, list[str]] = {}

    def add(self, path: str, reason: str) -> None:
        self.by_field.setdefault(path, []).append(reason)

    def __bool__(self) -> bool:
        return bool(self.by_field)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _name(value: Any) -> str:
    """A client-supplied key, shortened for an error message."""
    return str(value)[:40]


@cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _notify(payload: dict, clients: list[str] | None) -> None:
    """Tell the open connections (preferences/signals.py); a lost message must not undo a
    committed change (new connections resolve the policy afresh anyway)."""
    for receiver, outcome in policy_changed.send_robust(None, payload=payload, clients=clients):
        if isinstance(outcome, Exception):
            logger.error(
                "could not announce a refresh policy change (%s)",
                getattr(receiver, "__qualname__", receiver),
                exc_info=outcome,
            )


# -- preferences ---------------------------------------------------------------------------


def _preferences_validate(document: Any, *, user_type: str, table: dict) -> dict:
    """The validated changes of a PUT body; PreferencesInvalid with every reason."""
    errors = _Errors()
    if not isinstance(document, dict):
        raise PreferencesInvalid({"non_field_errors": ["Send a JSON object."]})
    known = {"categories", "paused", "notification_threshold", "quiet_hours"}
    for key in document:
        if key not in known:
            errors.add(
                "non_field_errors",
                f"Unknown field {_name(key)!r}; allowed: {', '.join(sorted(known))}.",
            )
    changes: dict[str, Any] = {}

    if "categories" in document:
        categories = document["categories"]
        modes: dict[str, str] = {}
        if not isinstance(categories, dict):
            errors.add("categories", 'An object of category name to {"mode": ...}.')
        else:
            for name, entry in categories.items():
                path = f"categories.{_name(name)}"
                if name not in Category.values:
                    errors.add(
                        path,
                        f"Unknown category {_name(name)!r}; categories: "
                        f"{', '.join(Category.values)}.",
                    )
                    continue
                if not isinstance(entry, dict) or set(entry) != {"mode"}:
                    errors.add(path, "An object with exactly one key, `mode`.")
                    continue
                mode = entry["mode"]
                reason = _mode_refusal(mode, table[(user_type, name)])
                if reason:
                    errors.add(f"{path}.mode", reason)
                else:
                    modes[name] = mode
        changes["categories"] = modes

    if "paused" in document:
        if isinstance(document["paused"], bool):
            changes["paused"] = document["paused"]
        else:
            errors.add("paused", "Must be true or false.")

    if "notification_threshold" in document:
        threshold = document["notification_threshold"]
        if isinstance(threshold, str) and threshold in NotificationThreshold.values:
            changes["notification_threshold"] = threshold
        else:
            errors.add(
                "notification_threshold",
                f"One of {', '.join(NotificationThreshold.values)}.",
            )

    if "quiet_hours" in document:
        quiet = document["quiet_hours"]
        if quiet is None:
            changes["quiet_hours"] = None
        elif not isinstance(quiet, dict) or set(quiet) != {"start", "end", "timezone"}:
            errors.add(
                "quiet_hours",
                'null, or {"start": "HH:MM", "end": "HH:MM", "timezone": "<IANA name>"}.',
            )
        else:
            parsed = _quiet_hours_parse(quiet, errors)
            if parsed is not None:
                changes["quiet_hours"] = parsed

    if errors:
        raise PreferencesInvalid(errors.by_field)
    return changes


def _mode_refusal(mode: Any, policy: PolicyValues) -> str | None:
    """Why `mode` cannot be chosen under `policy`; None if it can."""
    choices = [*Mode.values, "default"]
    if not isinstance(mode, str) or mode not in choices:
        return f"One of {', '.join(choices)}."
    if mode == Mode.REALTIME and not policy.realtime_allowed:
        return "Real time is not allowed for your account in this category."
    interval = MODE_INTERVAL_MS.get(mode)
    if mode != Mode.REALTIME and interval is not None and interval < policy.min_interval_ms:
        return (
            f"{mode} is below this category's minimum interval for your account "
            f"({policy.min_interval_ms} ms)."
        )
    return None


def _quiet_hours_parse(quiet: dict, errors: _Errors) -> tuple | None:
    times = []
    for key in ("start", "end"):
        value = quiet[key]
        match = _CLOCK.match(value) if isinstance(value, str) else None
        if match is None:
            errors.add(f"quiet_hours.{key}", 'A local time "HH:MM", 00:00 to 23:59.')
        else:
            times.append(dt.time(int(match.group(1)), int(match.group(2))))
    zone = quiet["timezone"]
    if not isinstance(zone, str) or len(zone) > TIMEZONE_MAX_LENGTH or zone not in _timezones():
        errors.add("quiet_hours.timezone", "An IANA time zone name, such as Europe/Berlin.")
        return None
    if len(times) != 2:
        return None
    if times[0] == times[1]:
        errors.add("quiet_hours", "`start` and `end` differ (quiet hours may span midnight).")
        return None
    return times[0], times[1], zone


def refresh_preferences_validate(*, user: Any, document: Any) -> dict:
    """The changes a preferences PUT asks for, checked against the client's current
    policy (read now, not from the cache); PreferencesInvalid names every problem."""
    return _preferences_validate(
        document, user_type=user_type_of(user), table=refresh_policy_table_load()
    )


@transaction.atomic
def refresh_preferences_update(
    *, user: Any, session_key: str | None, document: Any
) -> PreferenceSnapshot:
    """Store the fields a PUT names (others keep their value) for a signed-in user, else
    for the browser session `session_key` (which must exist); tell the client's open
    connections once committed.

    A category's mode must be allowed by the client's current policy: an interval below
    the minimum, or real time where it is forbidden, is refused with the reason. Mode
    `default` removes the choice (the policy's default applies).
    """
    changes = refresh_preferences_validate(user=user, document=document)
    signed_in = user is not None and getattr(user, "is_authenticated", False)
    if signed_in:
        row, _ = RefreshPreference.objects.select_for_update().get_or_create(user=user)
    else:
        session = Session.objects.filter(session_key=session_key).first() if session_key else None
        if session is None:
            raise ApplicationError("No browser session to store preferences for.")
        row, _ = RefreshPreference.objects.select_for_update().get_or_create(session=session)

    for name in ("paused", "notification_threshold"):
        if name in changes:
            setattr(row, name, changes[name])
    if "quiet_hours" in changes:
        quiet = changes["quiet_hours"]
        row.quiet_hours_start, row.quiet_hours_end, row.quiet_hours_timezone = (
            quiet if quiet is not None else (None, None, "")
        )
    row.updated_at = Now()
    row.save()
    for category, mode in changes.get("categories", {}).items():
        if mode == "default":
            CategoryPreference.objects.filter(preference=row, category=category).delete()
        else:
            CategoryPreference.objects.update_or_create(
                preference=row, category=category, defaults={"mode": mode}
            )

    owner = client_key(user, session_key)
    transaction.on_commit(lambda: _notify({"scope": SCOPE_PREFERENCES}, [owner] if owner else []))
    return preference_snapshot_of(
        RefreshPreference.objects.prefetch_related("categories").get(pk=row.pk)
    )


# -- policies ------------------------------------------------------------------------------


def refresh_policy_values_check(values: dict) -> dict[str, list[str]]:
    """Why a complete set of policy values cannot be stored (field: reasons); empty when
    it can. The same rules as the table's constraints, in words."""
    errors = _Errors()
    for name in ("min_interval_ms", "default_interval_ms"):
        value = values.get(name)
        if not _is_int(value) or not 0 <= value <= POLICY_MAX_INTERVAL_MS:
            errors.add(name, f"An integer from 0 to {POLICY_MAX_INTERVAL_MS} (ms).")
    deliveries = values.get("max_deliveries_per_minute")
    if not _is_int(deliveries) or not 1 <= deliveries <= POLICY_MAX_DELIVERIES_PER_MINUTE:
        errors.add(
            "max_deliveries_per_minute",
            f"An integer from 1 to {POLICY_MAX_DELIVERIES_PER_MINUTE}.",
        )
    debounce = values.get("debounce_ms")
    if not _is_int(debounce) or not 0 <= debounce <= POLICY_MAX_DEBOUNCE_MS:
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
    errors = _Errors()
    seen: set[tuple] = set()
    allowed = {"user_type", "category", *POLICY_FIELDS}
    for index, item in enumerate(items):
        path = f"policies[{index}]"
        if not isinstance(item, dict):
            errors.add(path, "A policy object.")
            continue
        unknown = sorted(_name(key) for key in item if key not in allowed)
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
    errors = _Errors()
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
    _notify({"scope": SCOPE_POLICY, "version": uuid.uuid4().hex}, None)
