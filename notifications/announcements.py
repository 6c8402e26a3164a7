"""Staff announcements: resolved, rate-limited, audited, stored and sent once committed
(notifications/signals.py)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from limits import parse as parse_rate
from limits.strategies import FixedWindowRateLimiter

from changes.contexts import SYSTEM, InvalidContext, context_normalize
from changes.selectors import change_log_state
from common.audit import BROADCAST, audit
from common.errors import InvalidParameter
from common.ratelimit import rate_limiter
from emissions.access import contexts_authorize
from notifications.messages import (
    Delivery,
    notification_row_delivery,
)
from notifications.models import (
    NotificationAudience,
    NotificationType,
    UpdateNotification,
)
from notifications.services import notification_ttl
from notifications.signals import notifications_created

logger = logging.getLogger(__name__)


def notifications_send_after_commit(deliveries: list[Delivery]) -> None:
    """Announce them once the current transaction commits (notifications/signals.py). A
    failure to send (Redis away) is logged: the notification exists, polls carry it and
    reconnects bring it if it needs an ack."""

    def send() -> None:
        for receiver, outcome in notifications_created.send_robust(None, deliveries=deliveries):
            if isinstance(outcome, Exception):
                logger.error(
                    "could not send %d notification(s) (%s)",
                    len(deliveries),
                    getattr(receiver, "__qualname__", receiver),
                    exc_info=outcome,
                )

    transaction.on_commit(send)


# Redis calls of the broadcast rate limiter give up after this long, and the broadcast
# goes through: an emergency announcement must not fail because Redis is slow.
BROADCAST_RATE_TIMEOUT_S = 0.5


def announcement_context_resolve(*, actor: Any, context: str | None) -> str | None:
    """The canonical context an announcement is for (None: everyone). InvalidParameter for
    one that is malformed, `system` (leave it out instead) or does not exist."""
    if context is None:
        return None
    try:
        name = context_normalize(context)
    except InvalidContext as exc:
        raise InvalidParameter(f"`context`: {exc}") from None
    if name == SYSTEM:
        raise InvalidParameter("Leave `context` out (or null) to reach every client.")
    [decision] = contexts_authorize(user=actor, contexts=[name])
    if decision.code:
        raise InvalidParameter(f"`context`: {name} does not exist.")
    return decision.context


def broadcast_retry_after(*, user_id: int) -> int | None:
    """None if this staff user may broadcast now (the hit is counted); else the seconds
    until they may (NOTIFY_BROADCAST_RATE per user, over every server process)."""
    rate = parse_rate(settings.NOTIFY_BROADCAST_RATE)
    limiter = _broadcast_limiter()
    try:
        if limiter.hit(rate, "broadcast", str(user_id)):
            return None
        stats = limiter.get_window_stats(rate, "broadcast", str(user_id))
    except Exception:
        logger.warning("broadcast rate limit unavailable; letting it through", exc_info=True)
        return None
    return max(1, math.ceil(stats.reset_time - time.time()))


def _broadcast_limiter() -> FixedWindowRateLimiter:
    return rate_limiter(timeout_s=BROADCAST_RATE_TIMEOUT_S)


@transaction.atomic
def announcement_broadcast(
    *,
    actor: Any,
    level: str,
    title: str,
    body: str,
    context: str | None,
    requires_ack: bool,
) -> UpdateNotification:
    """Create a staff announcement, audit it, and send it to every client (or to the
    followers of `context`) on every transport once committed. The caller has checked
    that `actor` is staff, validated the texts and resolved the context."""
    now = timezone.now()
    notification = UpdateNotification.objects.create(
        notification_type=NotificationType.ANNOUNCEMENT,
        level=level,
        title=title,
        body=body,
        context=context,
        seq=change_log_state().head_seq,
        audience=NotificationAudience.PUBLIC,
        requires_ack=requires_ack,
        payload={},
        created_at=now,
        expires_at=now + notification_ttl(),
    )
    audit(
        actor=actor,
        action=BROADCAST,
        target=context or "all",
        details={
            "notification": str(notification.id),
            "level": level,
            "title": title,
            "requires_ack": requires_ack,
        },
    )
    notifications_send_after_commit([notification_row_delivery(notification)])
    return notification
