"""Which database answers a read-only snapshot or catch-up: the streaming replica
(DATABASE_REPLICA_URL, the "replica" alias) when it is configured, reachable and fresh
enough, else the primary.

Fresh enough: the replica's replayed head (change_log_state.head_seq as the replica sees
it) is at least the seq the client already holds, so an answer from it is never older
than the client's own state. A replica behind is waited for up to
DATABASE_REPLICA_WAIT_MS, then the primary answers. A replica that fails (refused,
timed out, a recovery conflict) is left alone for DATABASE_REPLICA_RETRY_S, so a dead one
costs one slow request per process and period rather than every request.

Only the read sites that call `state_for_read` use the replica, with an explicit
`.using(alias)`: config/database_router.py sends everything else to the primary.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from prometheus_client import Counter

logger = logging.getLogger(__name__)

PRIMARY = DEFAULT_DB_ALIAS
REPLICA = "replica"

# What a replica failure looks like through Django: no connection (refused, the pool's
# timeout, libpq's connect_timeout), a connection lost, a query cancelled by a recovery
# conflict. Anything else is a bug the primary would raise too.
REPLICA_ERRORS = (OperationalError, InterfaceError)

# How often a read waiting for the replica looks at its head again: replay on a healthy
# standby is a few milliseconds behind, so a few looks fit in the wait bound.
REPLICA_POLL_S = 0.005

reads_total = Counter(
    "carbon_database_reads_total",
    "Snapshot and catch-up reads, by the database that answered (primary, replica)",
    ["database"],
)
replica_fallbacks_total = Counter(
    "carbon_database_replica_fallbacks_total",
    "Reads meant for the replica that the primary answered, by why (behind, down)",
    ["reason"],
)


class _Health:
    """This process's view of the replica: failing until `down_until` (monotonic), and
    whether it failed since it last answered (then it is probed before it is used)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down_until = 0.0
        self.last_logged = 0.0
        # Unknown until it answered once: the first read probes it too.
        self.failed = True


_health = _Health()


class HasHead(Protocol):
    head_seq: int


S = TypeVar("S", bound=HasHead)


def replica_configured() -> bool:
    """Whether DATABASE_REPLICA_URL set up the replica alias."""
    return REPLICA in settings.DATABASES


def replica_usable() -> bool:
    """Configured, not failed within the last DATABASE_REPLICA_RETRY_S, and, after a
    failure, answering a probe first."""
    if not replica_configured():
        return False
    now = time.monotonic()
    with _health.lock:
        if now < _health.down_until:
            return False
        if not _health.failed:
            return True
        # This thread probes; the others keep to the primary until it knows.
        _health.down_until = now + settings.DATABASE_REPLICA_RETRY_S
    try:
        _replica_probe()
    except psycopg.Error as exc:
        replica_failed(exc)
        return False
    with _health.lock:
        _health.failed = False
        _health.down_until = 0.0
    logger.info("read replica answers again; snapshots and catch-up read it")
    return True


def _replica_probe() -> None:
    """One plain connection to the replica, outside its pool. A refused connection fails
    here in a round trip; through the pool it would cost the pool's whole wait
    (DATABASE_REPLICA_TIMEOUT_S), psycopg retrying in the background meanwhile."""
    psycopg.connect(**connections[REPLICA].get_connection_params()).close()


def replica_failed(exc: BaseException) -> None:
    """The replica failed a read: leave it for DATABASE_REPLICA_RETRY_S, drop its pooled
    connections (after a restart they are all broken), log at most once a period."""
    now = time.monotonic()
    retry_s = settings.DATABASE_REPLICA_RETRY_S
    replica_fallbacks_total.labels("down").inc()
    with _health.lock:
        _health.down_until = now + retry_s
        _health.failed = True
        log = now - _health.last_logged >= retry_s
        if log:
            _health.last_logged = now
        try:
            connections[REPLICA].close_pool()
        except Exception:  # a pool already closed by another thread's failure
            logger.debug("closing the replica's pool failed", exc_info=True)
    if log:
        logger.warning("read replica failed (%s); reads go to the primary for %s s", exc, retry_s)


def read_counted(alias: str) -> str:
    """Count one read answered by `alias`; returns it."""
    reads_total.labels("replica" if alias == REPLICA else "primary").inc()
    return alias


def replica_state(
    read_state: Callable[[str], S],
    *,
    fresh_through: int = 0,
    accept: Callable[[S], bool] | None = None,
) -> S | None:
    """The log state as the replica sees it, when the replica is usable and its head is
    at least `fresh_through` (and `accept` agrees), waiting up to DATABASE_REPLICA_WAIT_MS
    for it to get there; None when the primary must answer instead."""
    if not replica_usable():
        return None
    deadline = time.monotonic() + settings.DATABASE_REPLICA_WAIT_MS / 1000
    while True:
        try:
            state = read_state(REPLICA)
        except REPLICA_ERRORS as exc:
            replica_failed(exc)
            return None
        if state.head_seq >= fresh_through and (accept is None or accept(state)):
            return state
        if time.monotonic() >= deadline:
            replica_fallbacks_total.labels("behind").inc()
            return None
        time.sleep(REPLICA_POLL_S)
