"""What the fault tests read from the database over psycopg (the tests' own or a private
server the stack runs on): the change log, the check of what clients received against
it, and the web server's active_connections rows."""

from __future__ import annotations

import functools
import socket
import time
from collections import defaultdict

import psycopg

from tests.faults.followers import Follower

# The public audience's bit in change_routes.audiences (changes.models.AUDIENCE_BITS).
PUBLIC_BIT = 1
# How long a closed client's active_connections row may take to go (the close is
# handled after the socket ends; 5 s is generous on a loaded 2-core machine).
CONNECTION_ROWS_TIMEOUT_S = 5.0


# -- the change log -----------------------------------------------------------------------


def log_head(database_url: str) -> int:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        row = conn.execute("SELECT head_seq FROM change_log_state WHERE id = 1").fetchone()
    # The row is created on first use (changes.publisher.change_log_state_ensure).
    return row[0] if row else 0


def wait_until_published(database_url: str, timeout: float = 30) -> None:
    """Until the publisher has published every captured change."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        while True:
            pending = conn.execute(
                "SELECT count(*) FROM data_changes WHERE processed_at IS NULL"
            ).fetchone()[0]
            if pending == 0:
                return
            assert time.monotonic() < deadline, f"{pending} changes still unpublished"
            time.sleep(0.05)


def context_heads(database_url: str, contexts: list[str]) -> dict[str, int]:
    """The last seq published to each context for the public audience."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT context, last_seq FROM context_heads"
            " WHERE audience = 'public' AND context = ANY(%s)",
            [contexts],
        ).fetchall()
    return dict(rows)


def routed_changes(database_url: str, context: str, after: int, through: int) -> list[tuple]:
    """(seq, entity, record id) of every change published to `context` for the public
    audience with seq in (after, through], from the log."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        return conn.execute(
            "SELECT r.seq, d.entity, d.record_id FROM change_routes r"
            " JOIN data_changes d ON d.seq = r.seq"
            " WHERE r.context = %s AND r.seq > %s AND r.seq <= %s AND r.audiences & %s <> 0"
            " ORDER BY r.seq",
            [context, after, through, PUBLIC_BIT],
        ).fetchall()


def exactly_once_problems(routes, client: Follower) -> tuple[list[str], dict]:
    """Everything wrong with what `client` received, compared with the log (`routes`:
    as `routed_changes` without the URL): gaps, duplicates, disorder, changes it should
    not have, changes it never got. Coalescing (PROTOCOL.md: repeated changes of one
    record in one batch become one item with the highest seq) is the only reason a
    logged seq may be absent. Also counts."""
    problems: list[str] = [f"{client.name}: unexpected {m}" for m in client.unexpected]
    counts = {"received": 0, "logged": 0, "coalesced": 0}
    for context in client.contexts:
        batches = client.batches[context]
        received: list[int] = []
        for batch in batches:
            where = f"{client.name} {context} batch prev_seq={batch.prev_seq} to {batch.seq_to}"
            if batch.prev_seq > batch.cursor_before:
                problems.append(f"{where}: gap after cursor {batch.cursor_before}")
            seqs = [item[0] for item in batch.items]
            if seqs != sorted(seqs):
                problems.append(f"{where}: items out of order {seqs}")
            if seqs and (seqs[0] <= batch.cursor_before or seqs[-1] > batch.seq_to):
                problems.append(f"{where}: items {seqs} outside ({batch.cursor_before}, to]")
            received.extend(seqs)
        if len(received) != len(set(received)):
            dupes = sorted({s for s in received if received.count(s) > 1})
            problems.append(f"{client.name} {context}: received twice {dupes[:10]}")
        if received != sorted(received):
            problems.append(f"{client.name} {context}: out of order across batches")
        logged = routes(context, client.start, client.cursors[context])
        logged_seqs = {row[0] for row in logged}
        foreign = sorted(set(received) - logged_seqs)
        if foreign:
            problems.append(f"{client.name} {context}: seqs not in the log {foreign[:10]}")
        got = set(received)
        for seq, entity, record_id in logged:
            if seq in got:
                continue
            batch = next((b for b in batches if b.cursor_before < seq <= b.seq_to), None)
            merged = batch is not None and any(
                s > seq and e == entity and i == str(record_id) for s, e, i in batch.items
            )
            if merged:
                counts["coalesced"] += 1
            else:
                problems.append(f"{client.name} {context}: lost seq {seq} ({entity} {record_id})")
        counts["received"] += len(received)
        counts["logged"] += len(logged)
    return problems, counts


def assert_exactly_once(database_url: str, clients: list[Follower]) -> dict:
    """Every client received every change of its contexts once, in order; the totals."""
    problems: list[str] = []
    totals: dict[str, int] = defaultdict(int)
    for client in clients:
        found, counts = exactly_once_problems(
            functools.partial(routed_changes, database_url), client
        )
        problems.extend(found)
        for key, value in counts.items():
            totals[key] += value
    assert problems == [], "\n".join(problems[:40])
    assert totals["received"] > 0, "the clients received nothing"
    return dict(totals)


# -- active_connections -------------------------------------------------------------------


def server_name(pid: int) -> str:
    """How active_connections names the server process with this pid
    (realtime.services.SERVER)."""
    return f"{socket.gethostname()}:{pid}"[:100]


def connection_rows(database_url: str, pid: int) -> int:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        return conn.execute(
            "SELECT count(*) FROM active_connections WHERE server = %s", [server_name(pid)]
        ).fetchone()[0]


def wait_for_no_connection_rows(database_url: str, pid: int) -> int:
    """Poll until the web process with this pid holds no active_connections row (all
    its clients closed); the rows still there after CONNECTION_ROWS_TIMEOUT_S."""
    deadline = time.monotonic() + CONNECTION_ROWS_TIMEOUT_S
    while True:
        rows = connection_rows(database_url, pid)
        if rows == 0 or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)
