"""Channel-layer group names, built in one place.

Channels allows ASCII letters, digits, hyphens, underscores and periods, under 100
characters; contexts contain colons, so they are spelled with periods here.
"""

import re

from changes.contexts import CONTEXT_MAX_LENGTH

_ALLOWED = re.compile(r"^[A-Za-z0-9._-]{1,99}$")


def context_group(context: str, audience: str) -> str:
    """The group a process joins to receive one context's batches for one audience."""
    if len(context) > CONTEXT_MAX_LENGTH:
        raise ValueError("context too long for a group name")
    name = f"ctx.{audience}.{context.replace(':', '.')}"
    if not _ALLOWED.match(name):
        raise ValueError(f"cannot build a group name from {context!r}")
    return name


def session_group(session_id: str) -> str:
    """The group of one live session, through which `POST /api/realtime/subscribe`
    reaches the SSE stream that holds it (`session.subscribe` messages)."""
    name = f"session.{session_id}"
    if not _ALLOWED.match(name):
        raise ValueError(f"cannot build a group name from {session_id!r}")
    return name


# Every server process's hub joins it: announcements and maintenance for all connections.
SYSTEM_GROUP = "system"
