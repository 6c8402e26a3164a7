"""Reads of refresh policies, and THE selector that resolves the effective policy of a
client: `client_policy_resolve` (its stored preferences are read by
preferences/preference_reads.py).

The policy bounds the preference: a preferred interval below the policy's minimum is
raised to it, real time where the policy forbids it falls back to the policy's default,
and the server-wide floors of `REALTIME_DEFAULT_POLICY` (settings) bound both. What comes
out is the dict sent as `hello.policy` (docs/protocol.md describes every key) and what
the live session enforces.

The policy table (16 rows) is cached per process for POLICY_CACHE_S and dropped at once
when a policy changes (`refresh_policy_table_forget`, called after the change commits
here and on every server process by the `policy_changed` control message).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from preferences.defaults import POLICY_DEFAULTS
from preferences.models import (
    ANALYST_GROUP,
    MODE_INTERVAL_MS,
    Category,
    Mode,
    RefreshPolicy,
    Transport,
    UserType,
)
from preferences.preference_reads import (
    NO_PREFERENCES,
    PreferenceSnapshot,
    refresh_preferences_get,
)

# A policy edit reaches every process at once through the `policy_changed` control
# message; this bound only matters when that message is lost (Redis restarting while an
# operator edits): new connections then see the edit within 10 s anyway.
POLICY_CACHE_S = 10.0

# The categories whose contexts carry batches; `announcements` is the `system` context,
# whose messages reach every connection, paused or not (PROTOCOL.md).
BATCH_CATEGORIES = (
    Category.COMPANY_METRICS.value,
    Category.INDUSTRY_BENCHMARKS.value,
    Category.DIRECTORY.value,
)

# The wire's per-category modes.
WIRE_REALTIME = "realtime"
WIRE_INTERVAL = "interval"
WIRE_MANUAL = "manual"

POLICY_FIELDS = (
    "min_interval_ms",
    "default_interval_ms",
    "max_deliveries_per_minute",
    "debounce_ms",
    "allowed_transports",
    "realtime_allowed",
)


def context_category(context: str) -> str | None:
    """The data category of a (canonical) context: company:* and overview carry company
    metrics, industry:* benchmarks, companies the directory, system announcements."""
    if context.startswith("company:") or context == "overview":
        return Category.COMPANY_METRICS.value
    if context.startswith("industry:"):
        return Category.INDUSTRY_BENCHMARKS.value
    if context == "companies":
        return Category.DIRECTORY.value
    if context == "system":
        return Category.ANNOUNCEMENTS.value
    return None


def user_type_of(user: Any) -> str:
    """staff (is_staff), else analyst (member of the `analyst` group), else registered;
    anonymous without a signed-in user. One query for a registered user, none otherwise."""
    if user is None or not getattr(user, "is_authenticated", False):
        return UserType.ANONYMOUS.value
    if user.is_staff:
        return UserType.STAFF.value
    if user.groups.filter(name=ANALYST_GROUP).exists():
        return UserType.ANALYST.value
    return UserType.REGISTERED.value


# -- policies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyValues:
    """One (user type, category) policy."""

    min_interval_ms: int
    default_interval_ms: int
    max_deliveries_per_minute: int
    debounce_ms: int
    allowed_transports: tuple[str, ...]
    realtime_allowed: bool

    def as_dict(self) -> dict:
        return {
            "min_interval_ms": self.min_interval_ms,
            "default_interval_ms": self.default_interval_ms,
            "max_deliveries_per_minute": self.max_deliveries_per_minute,
            "debounce_ms": self.debounce_ms,
            "allowed_transports": list(self.allowed_transports),
            "realtime_allowed": self.realtime_allowed,
        }


PolicyTable = dict[tuple[str, str], PolicyValues]


def policy_values_of(source: Any) -> PolicyValues:
    """A RefreshPolicy row (or a dict of its fields) as PolicyValues."""
    get = source.get if isinstance(source, dict) else lambda name: getattr(source, name)
    return PolicyValues(
        min_interval_ms=get("min_interval_ms"),
        default_interval_ms=get("default_interval_ms"),
        max_deliveries_per_minute=get("max_deliveries_per_minute"),
        debounce_ms=get("debounce_ms"),
        allowed_transports=tuple(
            t for t in Transport.values if t in set(get("allowed_transports"))
        ),
        realtime_allowed=get("realtime_allowed"),
    )


def refresh_policy_table_load() -> PolicyTable:
    """Every policy from the database (one query); a missing row is its default."""
    table = {key: policy_values_of(values) for key, values in POLICY_DEFAULTS.items()}
    for row in RefreshPolicy.objects.all():
        table[(row.user_type, row.category)] = policy_values_of(row)
    return table


_cache_lock = threading.Lock()
_cache: dict[str, Any] = {"table": None, "loaded_at": 0.0, "version": None}


def refresh_policy_table(*, version: str | None = None) -> PolicyTable:
    """The policy table, cached per process for POLICY_CACHE_S.

    `version` names a policy change (the `policy_changed` control message): the first
    call with a version the cache has not seen reloads, later calls with it reuse the
    table, so one change costs each process one query however many sessions it has.
    """
    now = time.monotonic()
    with _cache_lock:
        table = _cache["table"]
        fresh = table is not None and now - _cache["loaded_at"] < POLICY_CACHE_S
        if fresh and (version is None or version == _cache["version"]):
            return table
    table = refresh_policy_table_load()
    with _cache_lock:
        _cache.update(table=table, loaded_at=now, version=version or _cache["version"])
    return table


def refresh_policy_table_cached(*, version: str | None = None) -> PolicyTable | None:
    """The cached table if it is current (for `version`, when given), else None; never
    touches the database, so async code may call it."""
    with _cache_lock:
        table = _cache["table"]
        if table is None or time.monotonic() - _cache["loaded_at"] >= POLICY_CACHE_S:
            return None
        if version is not None and version != _cache["version"]:
            return None
        return table


def refresh_policy_table_forget() -> None:
    """Drop this process's cached table (a policy changed)."""
    with _cache_lock:
        _cache.update(table=None, loaded_at=0.0)


def refresh_policies_list() -> list[dict]:
    """Every policy as the admin API shows it, read now (not cached), in a stable order."""
    table = refresh_policy_table_load()
    return [
        {"user_type": user_type, "category": category, **table[(user_type, category)].as_dict()}
        for user_type in UserType.values
        for category in Category.values
    ]


# -- the effective policy ------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ClientPolicy:
    """A client's effective policy: who it is, what it chose, and the wire dict.

    Shared between the connections of clients with the same inputs (see
    client_policy_combine): never mutate `policy`.
    """

    user_type: str
    preferences: PreferenceSnapshot
    policy: dict

    def transport_allowed(self, transport: str) -> bool:
        return transport in self.policy["allowed_transports"]

    def category(self, category: str) -> dict | None:
        return self.policy["categories"].get(category)


def _category_policy(values: PolicyValues, chosen: str | None, floors: dict) -> dict:
    """One category's bounds and the mode the preference gets within them."""
    min_interval = max(floors["min_interval_ms"], values.min_interval_ms)
    if chosen == Mode.MANUAL:
        mode, interval = WIRE_MANUAL, None
    elif chosen == Mode.REALTIME and values.realtime_allowed:
        mode, interval = WIRE_REALTIME, min_interval
    elif chosen in MODE_INTERVAL_MS and chosen != Mode.REALTIME:
        # Stored before the policy's minimum rose: bounded, not refused.
        mode, interval = WIRE_INTERVAL, max(MODE_INTERVAL_MS[chosen], min_interval)
    elif values.default_interval_ms == 0 and values.realtime_allowed:
        # No preference (or real time, no longer allowed): the policy's default.
        mode, interval = WIRE_REALTIME, min_interval
    else:
        mode, interval = WIRE_INTERVAL, max(values.default_interval_ms, min_interval, 1)
    return {
        "mode": mode,
        "interval_ms": interval,
        "min_interval_ms": min_interval,
        "max_deliveries_per_minute": values.max_deliveries_per_minute,
        "debounce_ms": max(floors["debounce_ms"], values.debounce_ms),
        "realtime_allowed": values.realtime_allowed,
    }


# The effective policy of clients without preferences, per user type, for the table it
# was computed from: thousands of anonymous connections share one object instead of each
# holding a copy (memory per idle connection is a benchmark target).
_shared_lock = threading.Lock()
_shared: dict[str, tuple[PolicyTable, dict, ClientPolicy]] = {}


def client_policy_combine(
    *, user_type: str, preferences: PreferenceSnapshot, table: PolicyTable
) -> ClientPolicy:
    """The effective policy from its three inputs; pure (no database), so async code may
    call it to re-apply a new policy table to preferences it already holds."""
    floors = settings.REALTIME_DEFAULT_POLICY
    if preferences is NO_PREFERENCES:
        with _shared_lock:
            shared = _shared.get(user_type)
        if shared is not None and shared[0] is table and shared[1] == floors:
            return shared[2]
        resolved = _combine(user_type, preferences, table, floors)
        with _shared_lock:
            _shared[user_type] = (table, dict(floors), resolved)
        return resolved
    return _combine(user_type, preferences, table, floors)


def _combine(
    user_type: str, preferences: PreferenceSnapshot, table: PolicyTable, floors: dict
) -> ClientPolicy:
    categories = {
        category: _category_policy(
            table[(user_type, category)], preferences.modes.get(category), floors
        )
        for category in Category.values
    }
    batch = [categories[c] for c in BATCH_CATEGORIES]
    # A connection carries every category, so a transport is open where all allow it.
    transports = [
        t
        for t in Transport.values
        if all(t in table[(user_type, c)].allowed_transports for c in Category.values)
    ]
    policy = {
        # PROTOCOL.md's keys keep their meaning for clients that read only them: no two
        # batches of any one context come closer together than min_interval_ms (the
        # smallest of the categories'), nor sooner than debounce_ms after their changes.
        "min_interval_ms": min(
            c["min_interval_ms"] if c["interval_ms"] is None else c["interval_ms"] for c in batch
        ),
        "debounce_ms": min(c["debounce_ms"] for c in batch),
        "max_batch": floors["max_batch"],
        "heartbeat_ms": floors["heartbeat_ms"],
        "user_type": user_type,
        "categories": categories,
        "allowed_transports": transports,
        "paused": preferences.paused,
        "notification_threshold": preferences.notification_threshold,
        "quiet_hours": preferences.quiet_hours.as_dict() if preferences.quiet_hours else None,
    }
    return ClientPolicy(user_type=user_type, preferences=preferences, policy=policy)


def client_policy_resolve(
    *, user: Any, session_key: str | None, known: ClientPolicy | None = None
) -> ClientPolicy:
    """THE effective policy of a client (a user, else an anonymous browser session):
    its user type's policies bounding its preferences.

    `known`: an earlier resolution for the same client, whose user type and preferences
    are reused (a policy edit changes neither); then only the policy table is read, and
    from the process's cache. Without it: at most four queries (the analyst group, the
    preferences and their categories, the table when the cache is cold).
    """
    if known is not None:
        user_type, preferences = known.user_type, known.preferences
    else:
        user_type = user_type_of(user)
        preferences = refresh_preferences_get(user=user, session_key=session_key)
    return client_policy_combine(
        user_type=user_type, preferences=preferences, table=refresh_policy_table()
    )


def transport_allowed(*, user: Any, transport: str) -> bool:
    """Whether the client's policy lets it use `transport` (before a stream or a poll is
    served). Preferences do not matter here, so they are not read."""
    resolved = client_policy_combine(
        user_type=user_type_of(user), preferences=NO_PREFERENCES, table=refresh_policy_table()
    )
    return resolved.transport_allowed(transport)
