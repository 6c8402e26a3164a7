"""Connection tracking: rows in active_connections, written in batches.

These rows describe live sockets: after a database crash they are rebuilt by clients
reconnecting and by the sweep, so their writes commit without waiting for the WAL to
reach disk (`synchronous_commit = off`, per transaction). A reconnect storm of 5,000
clients makes three such commits each; waiting for fsync on every one (1.5 to 2.6 ms
here) was most of a connection's set-up time.

Each write is one statement that sets that for its own transaction (`_UNSYNCED`), in
autocommit: a transaction of its own with `SET LOCAL` took four round trips on the web
process's one database thread (BEGIN, SET, the write, COMMIT) where this takes one.
Connections set up at the rate that slow clients cut off and back make (bench/
slow_readers.py) kept that thread, and the GIL it takes from the event loop, busy.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Iterable

from django.conf import settings
from django.db import connection as db_connection
from django.db import transaction
from django.db.models import BigIntegerField, F, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from realtime.models import ActiveConnection

SERVER = f"{socket.gethostname()}:{os.getpid()}"[:100]


# Put in a write's WHERE clause: the statement's transaction (in autocommit, the
# statement itself) commits without waiting for the WAL flush. A write that matches no
# row never evaluates it, and has nothing to flush either.
_UNSYNCED = "set_config('synchronous_commit', 'off', true) IS NOT NULL"


def connection_open(
    *,
    session: str,
    transport: str,
    user,
    audience: str,
    client_address: str | None,
    user_agent: str = "",
) -> ActiveConnection:
    """Record a new live connection of this server process (one upsert)."""
    user_id = user.pk if user is not None and user.is_authenticated else None
    values = {
        "id": session,
        "transport": transport,
        "user_id": user_id,
        "audience": audience,
        "client_address": client_address,
        "user_agent": (user_agent or "")[:300],
        "server": SERVER,
    }
    with db_connection.cursor() as cursor:
        # A session that comes back (SSE and polling keep theirs) takes its row over.
        cursor.execute(
            "INSERT INTO active_connections (id, transport, user_id, audience,"
            " client_address, user_agent, server, contexts, dashboard_context, last_ack_seq)"
            " SELECT %(id)s, %(transport)s, %(user_id)s::bigint, %(audience)s,"
            " %(client_address)s::inet, %(user_agent)s, %(server)s, '{}'::varchar[], '', 0"
            f" WHERE {_UNSYNCED}"
            " ON CONFLICT (id) DO UPDATE SET transport = EXCLUDED.transport,"
            " user_id = EXCLUDED.user_id, audience = EXCLUDED.audience,"
            " client_address = EXCLUDED.client_address, user_agent = EXCLUDED.user_agent,"
            " server = EXCLUDED.server, last_seen = now()",
            values,
        )
    return ActiveConnection(**values)


def connection_contexts_set(*, session: str, contexts: list[str]) -> None:
    """The contexts a connection follows now (the first is its dashboard)."""
    with db_connection.cursor() as cursor:
        cursor.execute(
            "UPDATE active_connections SET contexts = %s::varchar[], dashboard_context = %s"
            f" WHERE id = %s AND {_UNSYNCED}",
            [list(contexts), contexts[0] if contexts else "", session],
        )


def connections_at_address(*, address: str | None) -> int:
    """Live connections from one client address, over every server process.

    Rows their process stopped refreshing (it died without deleting them: kill -9, a lost
    host) do not count after three refresh periods, so clients reconnecting elsewhere
    are not counted twice until the sweep removes them."""
    if address is None:
        return 0
    fresh_since = timezone.now() - dt.timedelta(seconds=3 * settings.REALTIME_TOUCH_INTERVAL_S)
    # Raw SQL: it runs at every connection's set-up, and the ORM's compiling of the count
    # cost more CPU than the query.
    with db_connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM active_connections"
            " WHERE client_address = %s::inet AND last_seen >= %s",
            [address, fresh_since],
        )
        return cursor.fetchone()[0]


def connections_of_stopped_processes_delete() -> int:
    """Delete the rows of server processes of this host that no longer run (a web server
    killed with -9 leaves its rows behind): run when a server process starts, so the
    clients that reconnect to it are not counted twice. Rows of other hosts are the
    sweep's (realtime.tasks)."""
    host = SERVER.rsplit(":", 1)[0]
    stopped = []
    servers = (
        ActiveConnection.objects.filter(server__startswith=f"{host}:")
        .values_list("server", flat=True)
        .distinct()
    )
    for server in servers:
        pid = server.rsplit(":", 1)[1]
        if server != SERVER and pid.isdigit() and not _process_runs(int(pid)):
            stopped.append(server)
    if not stopped:
        return 0
    deleted, _ = ActiveConnection.objects.filter(server__in=stopped).delete()
    return deleted


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True


def connection_close(*, session: str) -> None:
    """Forget a connection that ended (nothing refers to these rows: a plain DELETE)."""
    with db_connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM active_connections WHERE id = %s AND {_UNSYNCED}", [session])


def _sessions_write(statement: str, sessions: Iterable[str]) -> int:
    """Run `statement` (a DELETE or UPDATE of active_connections) on the rows of many
    sessions at once; how many rows it wrote."""
    sessions = list(sessions)
    if not sessions:
        return 0
    with db_connection.cursor() as cursor:
        cursor.execute(f"{statement} WHERE id = ANY(%s) AND {_UNSYNCED}", [sessions])
        return cursor.rowcount


def connections_close(*, sessions: Iterable[str]) -> int:
    """Forget many ended connections in one statement (a burst of disconnects)."""
    return _sessions_write("DELETE FROM active_connections", sessions)


def connections_touch(*, sessions: Iterable[str]) -> int:
    """Refresh last_seen of many connections in one statement (not one write per message)."""
    return _sessions_write("UPDATE active_connections SET last_seen = now()", sessions)


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
