"""Refresh policies on live connections.

A LiveSession resolves its client's effective policy when it opens
(`preferences.selectors.client_policy_resolve`), sends it in `hello`, and holds every
context to its category's rule (`ContextRule`): batches of one context at least
`spacing_s` apart, each gathered for `debounce_s`, none at all in manual mode. Whatever
arrives in between is merged into the next batch, never dropped.

When a preference or a policy changes, the writer sends the `policy_changed` control
message after its commit; the handler below re-resolves the policy of each targeted
session on every process, applies it at once (held batches are re-timed, contexts
leaving manual mode catch up, a paused preference pauses) and sends the client a
`policy` message. A policy edit costs each process one query, not one per connection:
sessions keep their user type and preferences, and the new policy table is read once
(by the edit's version) and shared.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async

from preferences import signals as preference_signals
from preferences.selectors import (
    WIRE_MANUAL,
    ClientPolicy,
    client_policy_combine,
    client_policy_resolve,
    refresh_policy_table,
    refresh_policy_table_cached,
    transport_allowed,
)
from preferences.services import POLICY_CHANGED, SCOPE_POLICY
from realtime.control import control_handler, control_send_sync

if TYPE_CHECKING:
    from realtime.session import LiveSession


@dataclass(frozen=True)
class ContextRule:
    """How live batches of one category's contexts are paced on one connection."""

    spacing_s: float  # at least this long between two batches of one context
    debounce_s: float  # a batch waits this long for more changes of its context
    live: bool  # False: manual mode, no live batches until the client resumes

    @property
    def paced(self) -> bool:
        return self.spacing_s > 0 or self.debounce_s > 0


# Before a policy is resolved (and for contexts of no category): as published.
FREE_RULE = ContextRule(0.0, 0.0, True)


_rules: weakref.WeakKeyDictionary[ClientPolicy, dict[str, ContextRule]] = (
    weakref.WeakKeyDictionary()
)


def client_policy_rules(resolved: ClientPolicy) -> dict[str, ContextRule]:
    """The rules of an effective policy, computed once per policy object (sessions of
    clients without preferences share one)."""
    rules = _rules.get(resolved)
    if rules is None:
        rules = _rules[resolved] = context_rules(resolved.policy)
    return rules


def context_rules(policy: dict) -> dict[str, ContextRule]:
    """Each category's rule: the spacing is the larger of the mode's interval and what
    max_deliveries_per_minute leaves between two deliveries."""
    rules = {}
    for category, entry in policy.get("categories", {}).items():
        live = entry["mode"] != WIRE_MANUAL
        interval_ms = entry["interval_ms"] or 0
        per_delivery_ms = math.ceil(60_000 / entry["max_deliveries_per_minute"])
        rules[category] = ContextRule(
            spacing_s=max(interval_ms, per_delivery_ms) / 1000,
            debounce_s=entry["debounce_ms"] / 1000,
            live=live,
        )
    return rules


async def client_policy_load(*, user: Any, session_key: str | None) -> ClientPolicy:
    """Resolve a client's effective policy from async code."""
    return await database_sync_to_async(client_policy_resolve)(user=user, session_key=session_key)


async def transport_permitted(*, user: Any, transport: str) -> bool:
    """Whether the client's policy allows `transport` (checked before a stream or a poll
    is served)."""
    return await database_sync_to_async(transport_allowed)(user=user, transport=transport)


async def _policy_reresolve(session: LiveSession, version: str | None) -> ClientPolicy:
    """A session's policy after a policy edit: its user type and preferences with the
    new table, read once per process and version."""
    known = session.client_policy
    table = refresh_policy_table_cached(version=version)
    if table is None:
        table = await database_sync_to_async(refresh_policy_table)(version=version)
    if known is None:
        return await client_policy_load(user=session.user, session_key=session.session_key)
    return client_policy_combine(
        user_type=known.user_type, preferences=known.preferences, table=table
    )


@control_handler(POLICY_CHANGED)
async def policy_changed(session: LiveSession, payload: dict) -> None:
    """`{"scope": "policy", "version": ...}` (every session) or `{"scope": "preferences"}`
    (the sessions of the client whose preferences changed)."""
    if session.client_policy is None:
        return  # still opening: it resolves the current policy itself
    if payload.get("scope") == SCOPE_POLICY:
        version = payload.get("version") if isinstance(payload.get("version"), str) else None
        resolved = await _policy_reresolve(session, version)
        # Only clients whose effective policy moved hear about a policy edit.
        announce = resolved.policy != session.client_policy.policy
    else:
        resolved = await client_policy_load(user=session.user, session_key=session.session_key)
        # A viewer's own change is always confirmed, even when nothing moved.
        announce = True
    await session.policy_apply(resolved, announce=announce)


def policy_change_announce(sender, *, payload: dict, clients: list[str] | None, **kwargs) -> None:
    """preferences' `policy_changed`: tell the open connections of every server process."""
    control_send_sync(POLICY_CHANGED, payload, clients=clients)


preference_signals.policy_changed.connect(
    policy_change_announce, dispatch_uid="realtime-policy-changed"
)
