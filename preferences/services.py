"""Writes of a viewer's refresh preferences, and what policy edits share with them
(preferences/policies.py).

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
import zoneinfo
from functools import cache
from typing import Any

from django.contrib.sessions.models import Session
from django.db import transaction
from django.db.models.functions import Now

from common.errors import ApplicationError
from common.identity import client_key
from preferences.models import (
    MODE_INTERVAL_MS,
    Category,
    CategoryPreference,
    Mode,
    NotificationThreshold,
    RefreshPreference,
)
from preferences.preference_reads import PreferenceSnapshot, preference_snapshot_of
from preferences.selectors import PolicyValues, refresh_policy_table_load, user_type_of
from preferences.signals import policy_changed

logger = logging.getLogger(__name__)

# The control action that re-resolves open connections' policies (realtime/policy.py).
POLICY_CHANGED = "policy_changed"
SCOPE_POLICY = "policy"
SCOPE_PREFERENCES = "preferences"

# "HH:MM", 00:00 to 23:59.
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
# Longest IANA zone name in use is 32 characters (America/Argentina/ComodRivadavia).
TIMEZONE_MAX_LENGTH = 64


class PreferencesInvalid(ApplicationError):
    """A preferences document that cannot be stored; `detail` maps fields to reasons."""

    code = "invalid_preferences"


class FieldErrors:
    """Reasons collected per field path, so one answer names every problem."""

    def __init__(self) -> None:
        self.by_field: dict[str, list[str]] = {}

    def add(self, path: str, reason: str) -> None:
        self.by_field.setdefault(path, []).append(reason)

    def __bool__(self) -> bool:
        return bool(self.by_field)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def short_name(value: Any) -> str:
    """A client-supplied key, shortened for an error message."""
    return str(value)[:40]


@cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def connections_notify(payload: dict, clients: list[str] | None) -> None:
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
    errors = FieldErrors()
    if not isinstance(document, dict):
        raise PreferencesInvalid({"non_field_errors": ["Send a JSON object."]})
    known = {"categories", "paused", "notification_threshold", "quiet_hours"}
    for key in document:
        if key not in known:
            errors.add(
                "non_field_errors",
                f"Unknown field {short_name(key)!r}; allowed: {', '.join(sorted(known))}.",
            )
    changes: dict[str, Any] = {}

    if "categories" in document:
        categories = document["categories"]
        modes: dict[str, str] = {}
        if not isinstance(categories, dict):
            errors.add("categories", 'An object of category name to {"mode": ...}.')
        else:
            for name, entry in categories.items():
                path = f"categories.{short_name(name)}"
                if name not in Category.values:
                    errors.add(
                        path,
                        f"Unknown category {short_name(name)!r}; categories: "
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


def _quiet_hours_parse(quiet: dict, errors: FieldErrors) -> tuple | None:
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
    transaction.on_commit(
        lambda: connections_notify({"scope": SCOPE_PREFERENCES}, [owner] if owner else [])
    )
    return preference_snapshot_of(
        RefreshPreference.objects.prefetch_related("categories").get(pk=row.pk)
    )
