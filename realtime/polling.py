"""The polling fallback (PROTOCOL.md, `GET /api/updates/latest/<cursor>`): parsing the
cursor and the query, reading a page of the change log, its ETag, the long poll that
parks on the process's hub, and the per-address rate limit (REALTIME_POLL_RATE, in
Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import QueryDict
from django.utils.dateparse import parse_datetime
from django.utils.http import parse_etags
from limits import parse as parse_rate
from limits.aio.strategies import FixedWindowRateLimiter

from changes.contexts import SYSTEM
from changes.replica import replica_configured
from changes.selectors import (
    RESET_CURSOR_INVALID,
    RESET_CURSOR_TOO_OLD,
    RESET_EPOCH_CHANGED,
    RESET_TOO_MANY_CHANGES,
    change_log_state,
    changes_since,
    seq_at,
)
from common.errors import InvalidParameter, NotFound
from common.json import json_dumps
from common.ratelimit import rate_limiter_async
from emissions.access import contexts_authorize
from realtime import protocol
from realtime.admission import subscriptions_over_cap
from realtime.hub import get_hub
from realtime.selectors import connection_owned
from realtime.serializers import SEQ_MAX

logger = logging.getLogger(__name__)

# PROTOCOL.md: `limit` is 1 to 5000 items, 500 by default.
POLL_DEFAULT_LIMIT = 500
POLL_MAX_LIMIT = 5000
# PROTOCOL.md: `wait` is 0 to 25 s. 25 s stays under the 30 s at which many proxies and
# mobile networks give up on a silent response.
POLL_MAX_WAIT_S = 25.0
# Redis calls of the rate limiter give up after this long, and the poll goes through:
# a Redis outage must not take the polling fallback down with it.
POLL_RATE_TIMEOUT_S = 0.5
# When the channel layer cannot be listened to (Redis away), a long poll re-reads the log
# this often instead: a waiting client is still answered within 2 s of a change, and
# clients are not sent back to hammer the server in a tight loop.
POLL_DEGRADED_INTERVAL_S = 2.0
# An ISO 8601 timestamp has at most ~35 characters; anything longer is garbage.
CURSOR_MAX_LENGTH = 64
# Epochs are 32 hex characters (change_log_state); a longer value cannot be one.
EPOCH_MAX_LENGTH = 100
POLL_PARAMETERS = ("contexts", "limit", "wait", "epoch", "session")

# Polling resets: when several contexts reset at once, the one reported (all share the
# polled cursor, so they differ only in how many changes each missed).
_RESET_PRIORITY = (
    RESET_EPOCH_CHANGED,
    RESET_CURSOR_INVALID,
    RESET_CURSOR_TOO_OLD,
    RESET_TOO_MANY_CHANGES,
)
_SEQ = re.compile(r"^[0-9]+\Z")
# What a seq or an ISO 8601 timestamp is written with (no spaces, no line breaks).
_CURSOR_CHARACTERS = re.compile(r"^[0-9A-Za-z:.,+-]+\Z")
_WAIT = re.compile(r"^[0-9]{1,2}(\.[0-9]{1,3})?\Z")
_LIMIT = re.compile(r"^[0-9]{1,4}\Z")


# -- polling: the query ------------------------------------------------------------------


@dataclass(frozen=True)
class PollQuery:
    """A parsed `GET /api/updates/latest/<cursor>`."""

    cursor: int | dt.datetime
    contexts: list[str] | None  # None: the session's
    limit: int
    wait: float
    epoch: str | None
    session: str | None

    def cursor_text(self) -> str:
        if isinstance(self.cursor, dt.datetime):
            return self.cursor.isoformat()
        return str(self.cursor)


def poll_cursor_parse(raw: str) -> int | dt.datetime:
    """A seq (digits only) or an ISO 8601 timestamp (UTC when it names no offset)."""
    if len(raw) > CURSOR_MAX_LENGTH or not _CURSOR_CHARACTERS.match(raw):
        raise InvalidParameter("The cursor is a seq or an ISO 8601 timestamp.")
    if _SEQ.match(raw):
        value = int(raw)
        if value > SEQ_MAX:
            raise InvalidParameter("A seq is a 64-bit integer.")
        return value
    try:
        moment = parse_datetime(raw)
        if moment is not None:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            moment = moment.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        moment = None
    if moment is None:
        raise InvalidParameter(
            "The cursor is a seq (a non-negative integer) or an ISO 8601 timestamp such as "
            "2026-11-27T10:15:03Z."
        )
    return moment


def poll_query_parse(cursor: str, params: QueryDict) -> PollQuery:
    """Validate the cursor and the query; InvalidParameter (400) for anything unusable."""
    unknown = sorted(name[:40] for name in params if name not in POLL_PARAMETERS)
    if unknown:
        raise InvalidParameter(
            f"Unknown query parameter(s): {', '.join(unknown)}. "
            f"Allowed: {', '.join(sorted(POLL_PARAMETERS))}."
        )
    single: dict[str, str] = {}
    for name in ("limit", "wait", "epoch", "session"):
        values = params.getlist(name)
        if len(values) > 1:
            raise InvalidParameter(f"`{name}` is given more than once.")
        if values:
            single[name] = values[0]

    contexts = None
    if "contexts" in params:
        # Repeated `contexts` are joined; blanks between commas are skipped.
        items = [item.strip() for value in params.getlist("contexts") for item in value.split(",")]
        contexts = list(dict.fromkeys(item for item in items if item))
        if not contexts:
            raise InvalidParameter("`contexts` lists at least one context, comma separated.")
        if over := subscriptions_over_cap(len(contexts), per="poll"):
            raise InvalidParameter(over, code=protocol.TOO_MANY_SUBSCRIPTIONS)
    elif "session" not in single:
        raise InvalidParameter("`contexts` is required (or a `session` whose contexts to use).")

    limit = POLL_DEFAULT_LIMIT
    if "limit" in single:
        if not _LIMIT.match(single["limit"]) or not 1 <= int(single["limit"]) <= POLL_MAX_LIMIT:
            raise InvalidParameter(f"`limit` is an integer from 1 to {POLL_MAX_LIMIT}.")
        limit = int(single["limit"])

    wait = 0.0
    if "wait" in single:
        if not _WAIT.match(single["wait"]) or float(single["wait"]) > POLL_MAX_WAIT_S:
            raise InvalidParameter(f"`wait` is a number of seconds from 0 to {POLL_MAX_WAIT_S:g}.")
        wait = float(single["wait"])

    # An empty epoch is a client that has none yet: the same as no epoch.
    epoch = single.get("epoch") or None
    if epoch is not None and len(epoch) > EPOCH_MAX_LENGTH:
        raise InvalidParameter("`epoch` is too long to be an epoch.")

    session = single.get("session")
    if session is not None and not session:
        raise InvalidParameter("`session` is empty.")
    return PollQuery(
        cursor=poll_cursor_parse(cursor),
        contexts=contexts,
        limit=limit,
        wait=wait,
        epoch=epoch,
        session=session,
    )


# -- polling: reading --------------------------------------------------------------------


@dataclass(frozen=True)
class PollScope:
    """What one poll reads: the cursor as a seq, the permitted contexts, the refusals."""

    cursor: int
    requested: list[str]
    contexts: list[str]
    rejected: list[dict]


def poll_scope(*, query: PollQuery, user: Any) -> PollScope:
    """Resolve the session, authorize the contexts, turn a timestamp into a seq."""
    requested = query.contexts
    if query.session is not None:
        owned = connection_owned(session=query.session, user=user)
        if owned is None:
            raise NotFound("No such session.")
        if requested is None:
            requested = list(owned.contexts)
    requested = requested or []
    decisions = contexts_authorize(user=user, contexts=requested)
    # `system` is implicit and never listed; nothing is routed to it through the log.
    permitted = [d.context for d in decisions if d.context and d.context != SYSTEM]
    rejected = [d.rejection() for d in decisions if d.code]
    # A timestamp: "changes published after that instant", on the database's clock
    # (seq_at reads processed_at). An instant in the future is "now": the head.
    cursor = query.cursor
    if isinstance(cursor, dt.datetime):
        cursor = seq_at(cursor)
    return PollScope(cursor, requested, list(dict.fromkeys(permitted)), rejected)


def poll_page(
    *, scope: PollScope, audience: str, limit: int, epoch: str | None, fresh_through: int = 0
) -> dict:
    """One answer of the polling fallback (the response body, before encoding), from a
    database whose head is at least `fresh_through` (see changes_since)."""
    if not scope.contexts:
        # Nothing to read; still refuse a cursor or an epoch the log cannot serve.
        state = change_log_state()
        reason = None
        if epoch is not None and epoch != state.epoch:
            reason = RESET_EPOCH_CHANGED
        elif scope.cursor > state.head_seq:
            reason = RESET_CURSOR_INVALID
        return _page_body(state.epoch, [], state.head_seq, False, scope, reason, [])

    page = changes_since(
        cursors=dict.fromkeys(scope.contexts, scope.cursor),
        audience=audience,
        limit=limit,
        epoch=epoch,
        fresh_through=fresh_through,
    )
    if page.resets:
        # One cursor serves every polled context, so a reset of any is a reset of all:
        # the client reloads its views and continues from the head.
        reasons = {reset.reason for reset in page.resets}
        reason = next((r for r in _RESET_PRIORITY if r in reasons), page.resets[0].reason)
        contexts = [reset.context for reset in page.resets]
        return _page_body(page.epoch, [], page.head_seq, False, scope, reason, contexts)
    # Every context started at the same cursor, so changes_since moved them to the same
    # place: the seq up to which every item of every context has been returned.
    next_seq = max(scope.cursor, min(page.cursors.values()))
    return _page_body(page.epoch, page.items, next_seq, page.has_more, scope, None, [])


def _page_body(
    epoch: str,
    items: list,
    next_seq: int,
    has_more: bool,
    scope: PollScope,
    reason: str | None,
    reset_contexts: list[str],
) -> dict:
    reset = None
    if reason is not None:
        reset = {"reason": reason, "seq": next_seq, "contexts": reset_contexts or scope.contexts}
    return {
        "epoch": epoch,
        "changes": items,
        "next": next_seq,
        "has_more": has_more,
        "rejected": scope.rejected,
        "reset": reset,
    }


@dataclass(frozen=True)
class PollAnswer:
    """An encoded page and its ETag."""

    body: bytes
    etag: str
    news: bool  # changes, a reset or more to read: answer a long poll at once


def poll_answer(page: dict, query_key: str, *, fresh: bool = False) -> PollAnswer:
    """Encode a page; `fresh`: it carries a notification new to the client."""
    body = json_dumps(page).encode()
    # The ETag covers the query and its result (PROTOCOL.md): the same body for another
    # cursor or limit is another tag.
    digest = hashlib.sha256(query_key.encode() + b"\n" + body).hexdigest()[:32]
    news = bool(page["changes"] or page["reset"] or page["has_more"] or fresh)
    return PollAnswer(body, f'"{digest}"', news)


def etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110)."""
    if not header:
        return False
    tags = parse_etags(header)
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


# -- polling: waiting --------------------------------------------------------------------


class PollWaiter:
    """Stands in for a connection at the hub: any frame of a polled context wakes the
    poll, which then reads the log (the truth) rather than the frame."""

    def __init__(self) -> None:
        self.woken = asyncio.Event()
        # The newest seq a frame told of: the read it wakes must see it (a read replica
        # behind it would answer "nothing new" and the poll would sleep on).
        self.seen_seq = 0

    async def hub_frame(self, context: str, frame: Any) -> None:
        self.seen_seq = max(self.seen_seq, getattr(frame, "seq_to", 0))
        self.woken.set()

    async def shutdown(self) -> None:
        """The server process is stopping: answer now with what there is."""
        self.woken.set()


async def long_poll(
    read: Callable[[int], Awaitable[PollAnswer]],
    *,
    contexts: list[str],
    audience: str,
    wait: float,
    done: Callable[[PollAnswer], bool],
) -> PollAnswer:
    """Read until `done` or `wait` seconds have passed, woken by the contexts' frames.
    `read(seq)` reads from a database at least at `seq`, the newest frame's.

    The waiter joins the hub before the first read here, so a change published between
    that read and the wait still wakes it; it always leaves, even when the client goes.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    hub = get_hub()
    waiter = PollWaiter()
    joined: list[str] = []
    degraded = False
    transports = getattr(hub, "transports", None)
    try:
        if transports is not None:
            transports.add(waiter)
        try:
            for context in contexts:
                await hub.join(waiter, context, audience)
                joined.append(context)
        except Exception:
            logger.warning(
                "long poll cannot listen to the channel layer; re-reading every %s s",
                POLL_DEGRADED_INTERVAL_S,
                exc_info=True,
            )
            degraded = True
        if replica_configured():
            # The first read may have come from a read replica behind the head, and what
            # it missed is published already: no frame would wake us for it. The reads
            # here see at least the primary's head of now.
            waiter.seen_seq = (await database_sync_to_async(change_log_state)()).head_seq
        while True:
            waiter.woken.clear()
            answer = await read(waiter.seen_seq)
            remaining = deadline - loop.time()
            if done(answer) or remaining <= 0 or getattr(hub, "stopping", False):
                return answer
            timeout = min(remaining, POLL_DEGRADED_INTERVAL_S) if degraded else remaining
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.woken.wait(), timeout)
    finally:
        if transports is not None:
            transports.discard(waiter)
        for context in joined:
            with contextlib.suppress(Exception):
                await hub.leave(waiter, context, audience)


# -- polling: the rate limit -------------------------------------------------------------


def _poll_limiter() -> FixedWindowRateLimiter:
    """The rate limiter of the running event loop (its Redis connections belong to it)."""
    return rate_limiter_async(timeout_s=POLL_RATE_TIMEOUT_S)


async def poll_retry_after(address: str) -> int | None:
    """None if this poll is within the rate; else the seconds until it would be."""
    rate = parse_rate(settings.REALTIME_POLL_RATE)
    limiter = _poll_limiter()
    try:
        async with asyncio.timeout(POLL_RATE_TIMEOUT_S * 2):
            if await limiter.hit(rate, "poll", address):
                return None
            stats = await limiter.get_window_stats(rate, "poll", address)
    except Exception:
        logger.warning("poll rate limit unavailable; letting the poll through", exc_info=True)
        return None
    return max(1, math.ceil(stats.reset_time - time.time()))
