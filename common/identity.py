"""Who a client is across its connections and reconnects."""

from __future__ import annotations

from typing import Any


def client_key(user: Any, session_key: str | None) -> str | None:
    """Who a connection belongs to, across its reconnects: the user, else the browser's
    Django session; None for an anonymous client without a session cookie."""
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    return f"anon:{session_key}" if session_key else None
