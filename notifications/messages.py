"""The `notification` message of PROTOCOL.md, typed once for every transport and the tests,
and the delivery record that carries it through the channel layer to each process."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, TypedDict

from changes.items import format_at
from common.json import json_dumps


class NotificationMessage(TypedDict):
    """PROTOCOL.md `notification`; `kind`, `data`, `created_at`, `expires_at` are this
    server's extensions (docs/protocol.md)."""

    type: Literal["notification"]
    id: str
    level: Literal["info", "warning", "critical"]
    title: str
    body: str
    context: str | None
    seq: int
    requires_ack: bool
    kind: str
    data: dict[str, Any]
    created_at: str
    expires_at: str


class Delivery(TypedDict):
    """What a server process needs to hand one notification to its sessions: who may get
    it, and the frame already encoded (once, by the sender)."""

    id: str
    kind: str
    audience: str
    context: str | None
    targets: list[str]
    requires_ack: bool
    seq: int
    created_at: str
    # Seconds since the epoch: compared on every connect, cheaper than parsing.
    expires_at: float
    frame: str


def notification_message(
    *,
    id: str,
    level: str,
    title: str,
    body: str,
    context: str | None,
    seq: int,
    requires_ack: bool,
    kind: str,
    data: dict[str, Any],
    created_at: dt.datetime,
    expires_at: dt.datetime,
) -> NotificationMessage:
    # `type` first: the SSE writer reads the event name from the start of the text.
    return {
        "type": "notification",
        "id": id,
        "level": level,  # type: ignore[typeddict-item]
        "title": title,
        "body": body,
        "context": context,
        "seq": seq,
        "requires_ack": requires_ack,
        "kind": kind,
        "data": data,
        "created_at": format_at(created_at),
        "expires_at": format_at(expires_at),
    }


def delivery(
    message: NotificationMessage, *, audience: str, targets: list[str], expires_at: dt.datetime
) -> Delivery:
    return {
        "id": message["id"],
        "kind": message["kind"],
        "audience": audience,
        "context": message["context"],
        "targets": list(targets),
        "requires_ack": message["requires_ack"],
        "seq": message["seq"],
        "created_at": message["created_at"],
        "expires_at": expires_at.timestamp(),
        "frame": json_dumps(message),
    }


def notification_row_message(notification: Any) -> NotificationMessage:
    """The message of an UpdateNotification row."""
    return notification_message(
        id=str(notification.id),
        level=notification.level,
        title=notification.title,
        body=notification.body,
        context=notification.context,
        seq=notification.seq,
        requires_ack=notification.requires_ack,
        kind=notification.notification_type,
        data=notification.payload or {},
        created_at=notification.created_at,
        expires_at=notification.expires_at,
    )


def notification_row_delivery(notification: Any) -> Delivery:
    return delivery(
        notification_row_message(notification),
        audience=notification.audience,
        targets=list(notification.target_sessions or []),
        expires_at=notification.expires_at,
    )
