"""Who may open a connection now: the checks the apps above realtime register, asked by
every transport before it admits a new connection or answers a poll.

adminpanel registers maintenance mode (new connections wait while it is on, open ones
stay; staff are admitted with MAINTENANCE_ADMIT_STAFF). A check gets the transport and a
coroutine function that looks the user up, so a check that needs no user (maintenance
off: the common case) costs no lookup. The first refusal wins; the transport answers it
in its own way (WebSocket: 1013 with `retry_after=`, SSE and polling: 503 with
Retry-After), with the refusal's message and retry hint.

`subscriptions_over_cap` is the one rule of how many contexts a connection, stream, poll or
session may follow (REALTIME_MAX_SUBSCRIPTIONS); each transport answers it its own way.

`status_fields` are the figures of `GET /api/updates/status` that the apps above add
(adminpanel: `maintenance`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings


@dataclass(frozen=True)
class Refusal:
    # The error code of SSE and polling answers ("maintenance").
    code: str
    message: str
    retry_after_s: int


UserOf = Callable[[], Awaitable[Any]]
AdmissionCheck = Callable[..., Awaitable[Refusal | None]]

_checks: dict[str, AdmissionCheck] = {}
_status_fields: dict[str, Callable[[], Any]] = {}


def admission_check(name: str) -> Callable[[AdmissionCheck], AdmissionCheck]:
    """Register `check(*, transport, user_of) -> Refusal | None` (replacing one of the
    same name)."""

    def register(check: AdmissionCheck) -> AdmissionCheck:
        _checks[name] = check
        return check

    return register


def status_field(name: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Register a figure of the updates status (a sync function, run in a view)."""

    def register(fn: Callable[[], Any]) -> Callable[[], Any]:
        _status_fields[name] = fn
        return fn

    return register


async def admission_refusal(*, transport: str, user_of: UserOf) -> Refusal | None:
    """Why a new connection (or poll) of `transport` is refused now, or None."""
    for check in _checks.values():
        refusal = await check(transport=transport, user_of=user_of)
        if refusal is not None:
            return refusal
    return None


def status_figures() -> dict[str, Any]:
    return {name: fn() for name, fn in _status_fields.items()}


def subscriptions_over_cap(count: int, *, per: str) -> str | None:
    """Why `count` contexts are too many for one `per` (connection, stream, poll,
    session), or None when they are within REALTIME_MAX_SUBSCRIPTIONS."""
    if count <= settings.REALTIME_MAX_SUBSCRIPTIONS:
        return None
    return f"At most {settings.REALTIME_MAX_SUBSCRIPTIONS} contexts per {per}."
