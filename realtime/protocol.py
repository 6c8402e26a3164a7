"""The server's messages of PROTOCOL.md, typed once for every transport and the tests."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, NotRequired, TypedDict

from django.conf import settings

from changes.items import format_at
from common.json import json_dumps
from realtime.metrics import error_count

# Error codes of `error` frames.
INVALID_MESSAGE = "invalid_message"
UNKNOWN_TYPE = "unknown_type"
RATE_LIMITED = "rate_limited"
TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"

# WebSocket close codes.
CLOSE_NORMAL = 1000
CLOSE_ORIGIN = 1008
CLOSE_TOO_LARGE = 1009
CLOSE_AUTH_REQUIRED = 4401
CLOSE_HEARTBEAT_TIMEOUT = 4408
CLOSE_RATE_LIMITED = 4429
CLOSE_UNAVAILABLE = 4503
# Extension: the client's refresh policy does not allow WebSocket (docs/protocol.md).
CLOSE_TRANSPORT_NOT_ALLOWED = 4403
# The matching error code of SSE and polling refusals (HTTP 403).
TRANSPORT_NOT_ALLOWED = "transport_not_allowed"
# Extension: the client did not read, and more than REALTIME_MAX_PENDING_BYTES waited
# for it. It reconnects and resumes from its cursors.
CLOSE_SLOW_CLIENT = 4413
SLOW_CLIENT = "slow_client"
# The server failed on this connection's behalf (a bug): reconnect and resume.
CLOSE_INTERNAL_ERROR = 1011


class CategoryPolicy(TypedDict):
    """One data category's effective refresh policy (preferences.selectors)."""

    mode: Literal["realtime", "interval", "manual"]
    interval_ms: int | None
    min_interval_ms: int
    max_deliveries_per_minute: int
    debounce_ms: int
    realtime_allowed: bool


class Policy(TypedDict):
    """How often a client may be sent updates: PROTOCOL.md's four keys, then the
    extensions of the effective refresh policy (docs/protocol.md)."""

    min_interval_ms: int
    debounce_ms: int
    max_batch: int
    heartbeat_ms: int
    user_type: NotRequired[str]
    categories: NotRequired[dict[str, CategoryPolicy]]
    allowed_transports: NotRequired[list[str]]
    paused: NotRequired[bool]
    notification_threshold: NotRequired[str]
    quiet_hours: NotRequired[dict | None]


class PolicyMessage(TypedDict):
    """Extension: the effective policy changed on an open connection."""

    type: Literal["policy"]
    policy: Policy


class Hello(TypedDict):
    type: Literal["hello"]
    session: str
    epoch: str
    seq: int
    policy: Policy
    server_time: str
    transport: str


class Rejection(TypedDict):
    context: Any
    code: Literal["invalid_context", "forbidden_context"]


class Subscribed(TypedDict, total=False):
    type: Literal["subscribed"]
    contexts: list[str]
    rejected: list[Rejection]
    seq: int
    paused: bool
    ref: Any


class Reset(TypedDict):
    type: Literal["reset"]
    context: str
    reason: str
    epoch: str
    seq: int


class Heartbeat(TypedDict):
    type: Literal["heartbeat"]
    seq: int
    server_time: str


class Error(TypedDict, total=False):
    type: Literal["error"]
    code: str
    detail: str
    ref: Any
    retry_after: int


def server_time() -> str:
    return format_at(dt.datetime.now(dt.UTC))


def default_policy() -> Policy:
    return dict(settings.REALTIME_DEFAULT_POLICY)  # type: ignore[return-value]


def encode(message: dict) -> str:
    """One JSON text for the wire."""
    return json_dumps(message)


def hello(*, session: str, epoch: str, seq: int, policy: Policy, transport: str) -> str:
    message: Hello = {
        "type": "hello",
        "session": session,
        "epoch": epoch,
        "seq": seq,
        "policy": policy,
        "server_time": server_time(),
        "transport": transport,
    }
    return encode(message)


def policy_message(*, policy: Policy) -> str:
    message: PolicyMessage = {"type": "policy", "policy": policy}
    return encode(message)


def subscribed(
    *,
    contexts: list[str],
    rejected: list[Rejection],
    seq: int,
    paused: bool,
    ref: Any = None,
) -> str:
    message: Subscribed = {
        "type": "subscribed",
        "contexts": contexts,
        "rejected": rejected,
        "seq": seq,
        "paused": paused,
    }
    if ref is not None:
        message["ref"] = ref
    return encode(message)


def reset(*, context: str, reason: str, epoch: str, seq: int) -> str:
    message: Reset = {
        "type": "reset",
        "context": context,
        "reason": reason,
        "epoch": epoch,
        "seq": seq,
    }
    return encode(message)


def heartbeat(*, seq: int) -> str:
    message: Heartbeat = {"type": "heartbeat", "seq": seq, "server_time": server_time()}
    return encode(message)


def pong(*, seq: int, ref: Any = None) -> str:
    message: dict = {"type": "pong", "seq": seq, "server_time": server_time()}
    if ref is not None:
        message["ref"] = ref
    return encode(message)


def error(*, code: str, detail: str, ref: Any = None, retry_after: int | None = None) -> str:
    # Every error frame is made here, so it is counted here (carbon_realtime_errors_total).
    error_count(code)
    message: Error = {"type": "error", "code": code, "detail": detail}
    if ref is not None:
        message["ref"] = ref
    if retry_after is not None:
        message["retry_after"] = retry_after
    return encode(message)
