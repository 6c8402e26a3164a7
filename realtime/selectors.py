"""Reads of live connections (active_connections)."""

from __future__ import annotations

import re
from typing import Any

from django.db.models import Count

from realtime.models import ActiveConnection, Transport
from realtime.serializers import SESSION_MAX_LENGTH

# Session ids are uuid4 hex; anything else (a NUL byte, say) names no session.
_SESSION = re.compile(rf"^[A-Za-z0-9_-]{{1,{SESSION_MAX_LENGTH}}}\Z")


def connection_owned(*, session: str, user: Any) -> ActiveConnection | None:
    """The live session `session` if it belongs to `user`; a signed-out user owns the
    sessions opened without a user. Anything else is None: refused like a missing one."""
    if not _SESSION.match(session):
        return None
    found = ActiveConnection.objects.filter(id=session)
    if user is not None and user.is_authenticated:
        found = found.filter(user_id=user.pk)
    else:
        found = found.filter(user__isnull=True)
    return found.first()


def connection_counts() -> dict[str, int]:
    """Live connections by transport over every server process (active_connections)."""
    rows = dict(
        ActiveConnection.objects.values_list("transport").annotate(n=Count("id")).order_by()
    )
    counts = {transport: rows.get(transport, 0) for transport in Transport.values}
    counts["total"] = sum(rows.values())
    return counts
