"""Connection tracking: rows in active_connections, written in batches."""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Iterable

from django.db import transaction
from django.db.models import BigIntegerField, F, Value
from django.db.models.functions import Greatest, Now
from django.utils import timezone

from realtime.models import ActiveConnection

SERVER = f"{socket.gethostname()}:{os.getpid()}"[:100]


def connection_open(
    *,
    session: str,
    transport: str,
    user,
    audience: str,
    client_address: str | None,
    user_agent: str = "",
) -> ActiveConnection:
    """Record a new live connection of this server process."""
    user_id = user.pk if user is not None and user.is_authenticated else None
    connection, _ = ActiveConnection.objects.update_or_create(
        id=session,
        defaults={
            "transport": transport,
            "user_id": user_id,
            "audience": audience,
            "client_address": client_address,
            "user_agent": (user_agent or "")[:300],
            "server": SERVER,
            "last_seen": Now(),
        },
    )
    return connection


def connection_contexts_set(*, session: str, contexts: list[str]) -> None:
    """The contexts a connection follows now (the first is its dashboard)."""
    ActiveConnection.objects.filter(id=session).update(
        contexts=contexts, dashboard_context=contexts[0] if contexts else ""
    )


def connections_at_address(*, address: str | None) -> int:
    """Live connections from one client address, over every server process."""
    if address is None:
        return 0
    return ActiveConnection.objects.filter(client_address=address).count()


def connection_close(*, session: str) -> None:
    ActiveConnection.objects.filter(id=session).delete()


def connections_touch(*, sessions: Iterable[str]) -> int:
    """Refresh last_seen of many connections in one statement (not one write per message)."""
    sessions = list(sessions)
    if not sessions:
        return 0
    return ActiveConnection.objects.filter(id__in=sessions).update(last_seen=Now())


@transaction.atomic
def connections_sweep(*, older_than: dt.timedelta) -> int:
    """Remove connections nobody refreshed for `older_than` (their process died)."""
    cutoff = timezone.now() - older_than
    deleted, _ = ActiveConnection.objects.filter(last_seen__lt=cutoff).delete()
    return deleted


def connection_ack_record(*, session: str, seq: int) -> None:
    """Record that a session received everything up to `seq`; never lowers what it had."""
    ActiveConnection.objects.filter(id=session).update(
        last_ack_seq=Greatest(F("last_ack_seq"), Value(seq, BigIntegerField()))
    )
