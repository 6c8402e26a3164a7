"""HTTP endpoints of the live protocol (PROTOCOL.md): the polling fallback, the change
log's status, health, and subscribe / acknowledge for SSE and polling sessions.

The poll is a plain async Django view: a long poll parks on the process's hub and is
woken by the channel layer, which a (sync) DRF view cannot do without holding a thread.
It does what DRF would otherwise do itself: token or session authentication, a rate
limit (per client address, in Redis) and the project's JSON error shape. The other
endpoints are DRF views with the project's authentication (CSRF enforced for browsers
signed in with the session cookie), throttles and error handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import math
import re
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections
from django.db.models import BigIntegerField, Count, F, Value
from django.db.models.functions import Greatest
from django.http import HttpRequest, HttpResponse, HttpResponseNotModified, QueryDict
from django.utils.cache import patch_vary_headers
from django.utils.dateparse import parse_datetime
from django.utils.http import parse_etags
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, extend_schema
from limits import parse as parse_rate
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from redis import asyncio as redis_asyncio
from redis.exceptions import RedisError
from rest_framework import status as http_status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from changes.contexts import SYSTEM
from changes.items import format_at
from changes.publisher import json_dumps
from changes.selectors import (
    RESET_CURSOR_INVALID,
    RESET_CURSOR_TOO_OLD,
    RESET_EPOCH_CHANGED,
    RESET_TOO_MANY_CHANGES,
    change_log_state,
    changes_since,
    seq_at,
)
from config.errors import ApplicationError, InvalidParameter, NotFound, error_body
from realtime import protocol
from realtime.access import audience_of, contexts_authorize
from realtime.auth import user_for_token
from realtime.hub import get_hub
from realtime.models import ActiveConnection, Transport
from realtime.serializers import (
    SEQ_MAX,
    SESSION_MAX_LENGTH,
    AcknowledgeSerializer,
    HealthSerializer,
    StatusSerializer,
    SubscribedSerializer,
    SubscribeSerializer,
)
from realtime.services import connection_contexts_set
from realtime.sse import session_group

logger = logging.getLogger(__name__)

# PROTOCOL.md: `limit` is 1 to 5000 items, 500 by default.
POLL_DEFAULT_LIMIT = 500
POLL_MAX_LIMIT = 5000
# PROTOCOL.md: `wait` is 0 to 25 s. 25 s stays under the 30 s at which many proxies and
# mobile networks give up on a silent response.
POLL_MAX_WAIT_S = 25.0
# Polls per client address per minute, over all server processes. A tab polling without
# `wait` once a second makes 60, a long-polling tab a few; 300 lets an office behind one
# address keep several tabs open and still cuts a flood off within its first second.
POLL_RATE = "300/minute"
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

# PROTOCOL.md: 64 KiB is the largest client message; larger bodies get 413.
BODY_MAX_BYTES = 64 * 1024

# `pending` counts unpublished changes up to this many (on the partial index, so the
# count stays cheap in a 100,000-row bulk update); beyond it, `pending_capped` says so.
PENDING_COUNT_CAP = 100_000
# Each health check gives up after this long. A round trip to a local PostgreSQL or
# Redis takes about a millisecond; 2 s means broken, and keeps the whole answer under the
# 5 s timeout load balancers commonly give a health probe.
HEALTH_CHECK_TIMEOUT_S = 2.0
# The publisher is unhealthy (503) when its oldest unpublished change is older than this.
# It publishes within ~20 ms when running, and Celery beat's safety net every second;
# 30 s of lag means both are down or overwhelmed.
PUBLISHER_LAG_LIMIT_MS = 30_000
# How long the channel-layer check waits for nothing after its round trip, to drop the
# channel's subscription (see `_channel_drop`).
CHANNEL_DROP_S = 0.01

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
# Session ids are uuid4 hex; anything else (a NUL byte, say) names no session.
_SESSION = re.compile(rf"^[A-Za-z0-9_-]{{1,{SESSION_MAX_LENGTH}}}\Z")


class Unavailable(ApplicationError):
    """A dependency (database, Redis, channel layer) failed: retry later."""

    code = "unavailable"
    status_code = http_status.HTTP_503_SERVICE_UNAVAILABLE


class PayloadTooLarge(ApplicationError):
    code = "payload_too_large"
    status_code = http_status.HTTP_413_REQUEST_ENTITY_TOO_LARGE


# -- shared reads --------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Backlog:
    """What waits for the publisher."""

    pending: int
    capped: bool
    lag_ms: int


def publisher_backlog(*, cap: int = PENDING_COUNT_CAP) -> Backlog:
    """Unpublished changes (counted up to `cap`) and the age of the oldest, in one query
    on the partial index of unprocessed rows, on the database's clock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM data_changes"
            " WHERE processed_at IS NULL LIMIT %s) AS waiting),"
            " (SELECT greatest(0, extract(epoch FROM clock_timestamp() - created_at) * 1000)"
            " FROM data_changes WHERE processed_at IS NULL ORDER BY capture_id LIMIT 1)",
            [cap + 1],
        )
        pending, lag = cursor.fetchone()
    return Backlog(pending=min(pending, cap), capped=pending > cap, lag_ms=int(lag or 0))


def connection_counts() -> dict[str, int]:
    """Live connections by transport over every server process (active_connections)."""
    rows = dict(
        ActiveConnection.objects.values_list("transport").annotate(n=Count("id")).order_by()
    )
    counts = {transport: rows.get(transport, 0) for transport in Transport.values}
    counts["total"] = sum(rows.values())
    return counts


def _json_response(body: Any, status: int = 200, headers: dict | None = None) -> HttpResponse:
    # json_dumps, not JsonResponse: change items hold Decimals, sent as JSON numbers.
    return HttpResponse(
        json_dumps(body), status=status, content_type="application/json", headers=headers
    )


def _error_response(exc: ApplicationError, headers: dict | None = None) -> HttpResponse:
    return _json_response(error_body(exc.code, exc.detail), exc.status_code, headers)


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
        if len(contexts) > settings.REALTIME_MAX_SUBSCRIPTIONS:
            raise InvalidParameter(
                f"At most {settings.REALTIME_MAX_SUBSCRIPTIONS} contexts per poll.",
                code=protocol.TOO_MANY_SUBSCRIPTIONS,
            )
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


def poll_page(*, scope: PollScope, audience: str, limit: int, epoch: str | None) -> dict:
    """One answer of the polling fallback (the response body, before encoding)."""
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


def poll_answer(page: dict, query_key: str) -> PollAnswer:
    body = json_dumps(page).encode()
    # The ETag covers the query and its result (PROTOCOL.md): the same body for another
    # cursor or limit is another tag.
    digest = hashlib.sha256(query_key.encode() + b"\n" + body).hexdigest()[:32]
    news = bool(page["changes"] or page["reset"] or page["has_more"])
    return PollAnswer(body, f'"{digest}"', news)


def _etag_matches(header: str | None, etag: str) -> bool:
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

    async def hub_frame(self, context: str, frame: Any) -> None:
        self.woken.set()

    async def shutdown(self) -> None:
        """The server process is stopping: answer now with what there is."""
        self.woken.set()


async def long_poll(
    read: Callable[[], Awaitable[PollAnswer]],
    *,
    contexts: list[str],
    audience: str,
    wait: float,
    done: Callable[[PollAnswer], bool],
) -> PollAnswer:
    """Read until `done` or `wait` seconds have passed, woken by the contexts' frames.

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
        while True:
            waiter.woken.clear()
            answer = await read()
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


# -- polling: authentication and the rate limit ------------------------------------------


class _BadToken(Exception):
    pass


async def _poll_user(request: HttpRequest) -> Any:
    """`Authorization: Token <key>` as DRF's TokenAuthentication reads it, else the
    session cookie's user. _BadToken for a Token header that names no active user."""
    header = request.headers.get("Authorization", "")
    parts = header.split()
    if parts and parts[0].lower() == "token":
        if len(parts) != 2:
            raise _BadToken("Invalid token header.")
        user = await user_for_token(parts[1])
        if user is None:
            raise _BadToken("Invalid token.")
        return user
    return await request.auser()


_limiters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ASYNC_SCHEMES = {"redis": "async+redis", "rediss": "async+rediss", "unix": "async+redis+unix"}


def _poll_limiter() -> FixedWindowRateLimiter:
    """The rate limiter of the running event loop (its Redis connections belong to it)."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        scheme, _, rest = settings.REDIS_URL.partition("://")
        storage = RedisStorage(
            f"{_ASYNC_SCHEMES.get(scheme, 'async+' + scheme)}://{rest}",
            implementation="redispy",
            key_prefix=f"{settings.REDIS_PREFIX}:limits",
            socket_timeout=POLL_RATE_TIMEOUT_S,
            socket_connect_timeout=POLL_RATE_TIMEOUT_S,
        )
        # A fixed window: two Redis commands per poll, and an exact Retry-After.
        limiter = _limiters[loop] = FixedWindowRateLimiter(storage)
    return limiter


async def poll_retry_after(address: str) -> int | None:
    """None if this poll is within the rate; else the seconds until it would be."""
    rate = parse_rate(POLL_RATE)
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


# -- polling: the view -------------------------------------------------------------------


def _poll_headers(response: HttpResponse, etag: str) -> HttpResponse:
    response["ETag"] = etag
    # Per user, and always revalidated: a cache may keep it but must ask (If-None-Match).
    response["Cache-Control"] = "private, no-cache"
    patch_vary_headers(response, ("Authorization", "Cookie"))
    return response


# Exempt so that other methods get the JSON 405 below rather than Django's HTML CSRF page;
# the view changes nothing, whatever the method.
@csrf_exempt
async def updates_latest(request: HttpRequest, cursor: str) -> HttpResponse:
    """`GET /api/updates/latest/<cursor>`: the polling fallback, long poll with `wait`."""
    if request.method != "GET":
        return _error_response(
            ApplicationError(
                f"Method {request.method[:10]} is not allowed.",
                code="method_not_allowed",
                status_code=405,
            ),
            headers={"Allow": "GET"},
        )
    retry_after = await poll_retry_after(request.META.get("REMOTE_ADDR") or "unknown")
    if retry_after is not None:
        return _error_response(
            ApplicationError(
                f"Too many polls from this address; retry in {retry_after} s.",
                code="throttled",
                status_code=429,
            ),
            headers={"Retry-After": str(retry_after)},
        )
    try:
        user = await _poll_user(request)
    except _BadToken as exc:
        return _error_response(
            ApplicationError(str(exc), code="authentication_failed", status_code=401),
            headers={"WWW-Authenticate": "Token"},
        )
    try:
        return await _poll(request, cursor, user)
    except ApplicationError as exc:
        return _error_response(exc)
    except (DatabaseError, RedisError, OSError):
        logger.exception("poll failed")
        return _error_response(Unavailable("The change log is unavailable; retry shortly."))


async def _poll(request: HttpRequest, cursor: str, user: Any) -> HttpResponse:
    query = poll_query_parse(cursor, request.GET)
    audience = audience_of(user)
    scope = await database_sync_to_async(poll_scope)(query=query, user=user)
    query_key = json_dumps(
        {
            "audience": audience,
            "cursor": query.cursor_text(),
            "requested": scope.requested,
            "contexts": scope.contexts,
            "limit": query.limit,
            "epoch": query.epoch,
        }
    )

    async def read() -> PollAnswer:
        page = await database_sync_to_async(poll_page)(
            scope=scope, audience=audience, limit=query.limit, epoch=query.epoch
        )
        return poll_answer(page, query_key)

    if_none_match = request.headers.get("If-None-Match")

    def done(answer: PollAnswer) -> bool:
        # Something to say that the client does not already hold.
        return answer.news and not _etag_matches(if_none_match, answer.etag)

    answer = await read()
    if query.wait > 0 and scope.contexts and not done(answer):
        answer = await long_poll(
            read, contexts=scope.contexts, audience=audience, wait=query.wait, done=done
        )
    if _etag_matches(if_none_match, answer.etag):
        return _poll_headers(HttpResponseNotModified(), answer.etag)
    return _poll_headers(HttpResponse(answer.body, content_type="application/json"), answer.etag)


# -- DRF endpoints -------------------------------------------------------------------------


class RealtimeAPIView(APIView):
    """A DRF view whose dependency failures (database, Redis) answer 503, not 500."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, (DatabaseError, RedisError, OSError)):
            logger.warning("%s failed: %r", type(self).__name__, exc)
            exc = Unavailable("A service this endpoint needs is unavailable; retry shortly.")
        return super().handle_exception(exc)


def json_body(request: Request, serializer_class) -> dict:
    """The validated JSON body; 413 over BODY_MAX_BYTES, 400 when malformed."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    too_large = PayloadTooLarge(f"The body is limited to {BODY_MAX_BYTES} bytes.")
    if declared > BODY_MAX_BYTES:
        raise too_large
    try:
        raw = request.body
    except RequestDataTooBig:
        raise too_large from None
    if len(raw) > BODY_MAX_BYTES:
        raise too_large
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class SubscribeView(RealtimeAPIView):
    """Add contexts to an SSE or polling session; replies like `subscribed`."""

    @extend_schema(
        request=SubscribeSerializer,
        responses={200: SubscribedSerializer, 400: None, 404: None, 413: None, 503: None},
    )
    def post(self, request: Request) -> Response:
        data = json_body(request, SubscribeSerializer)
        owned = connection_owned(session=data["session"], user=request.user)
        if owned is None:
            raise NotFound("No such session.")
        if owned.transport == Transport.WEBSOCKET:
            raise ApplicationError("A WebSocket session subscribes over its socket.")
        decisions = contexts_authorize(user=request.user, contexts=data["contexts"])
        accepted = list(
            dict.fromkeys(d.context for d in decisions if d.context and d.context != SYSTEM)
        )
        rejected = [d.rejection() for d in decisions if d.code]
        active = list(dict.fromkeys([*owned.contexts, *accepted]))
        if len(active) > settings.REALTIME_MAX_SUBSCRIPTIONS:
            raise ApplicationError(
                f"At most {settings.REALTIME_MAX_SUBSCRIPTIONS} contexts per session.",
                code=protocol.TOO_MANY_SUBSCRIPTIONS,
            )
        # The head before the stream hears of it: the stream starts the new contexts
        # right after this seq, so the client misses nothing published after `seq`.
        head = change_log_state().head_seq
        if active != list(owned.contexts):
            connection_contexts_set(session=owned.id, contexts=active)
        if accepted:
            async_to_sync(get_channel_layer().group_send)(
                session_group(owned.id),
                {"type": "session.subscribe", "contexts": accepted, "since": head},
            )
        return Response(
            {"type": "subscribed", "contexts": active, "rejected": rejected, "seq": head}
        )


class AcknowledgeView(RealtimeAPIView):
    """Record that a session received everything up to `seq` (or one notification)."""

    @extend_schema(
        request=AcknowledgeSerializer,
        responses={204: None, 400: None, 404: None, 413: None},
    )
    def post(self, request: Request) -> Response:
        data = json_body(request, AcknowledgeSerializer)
        owned = connection_owned(session=data["session"], user=request.user)
        if owned is None:
            raise NotFound("No such session.")
        if "notification" in data:
            # Notifications arrive with a later issue: no id names one yet.
            raise NotFound("No such notification.")
        head = change_log_state().head_seq
        if data["seq"] > head:
            raise InvalidParameter(f"`seq` is above the server's head ({head}).")
        ActiveConnection.objects.filter(id=owned.id).update(
            last_ack_seq=Greatest(F("last_ack_seq"), Value(data["seq"], BigIntegerField()))
        )
        return Response(status=http_status.HTTP_204_NO_CONTENT)


class UpdatesStatusView(RealtimeAPIView):
    """The change log and its publisher: epoch, head, backlog."""

    @extend_schema(responses={200: StatusSerializer, 503: None})
    def get(self, request: Request) -> Response:
        state = change_log_state()
        backlog = publisher_backlog()
        return Response(
            {
                "epoch": state.epoch,
                "head_seq": state.head_seq,
                "pending": backlog.pending,
                "pending_capped": backlog.capped,
                "lag_ms": backlog.lag_ms,
                # Maintenance mode arrives with a later issue; until then it is never on.
                "maintenance": False,
                "last_published_at": (
                    format_at(state.last_published_at) if state.last_published_at else None
                ),
            }
        )


# -- health --------------------------------------------------------------------------------


def _failure(exc: BaseException) -> str:
    # The kind of failure only: hosts, ports and credentials stay out of a public answer.
    return "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__


def _in_thread(function: Callable[[], Any], *, alias: str = DEFAULT_DB_ALIAS):
    """Run a database read in a thread of its own, not the request's: a hanging database
    must not hold the request's thread past the check's timeout. Closes the thread's
    connection (back to the pool) afterwards."""

    def run() -> Any:
        try:
            return function()
        finally:
            connections[alias].close()

    return sync_to_async(run, thread_sensitive=False)()


async def _timed(probe: Callable[[], Awaitable[Any]], timeout: float) -> dict:
    """Run a probe with a timeout; its latency is what it returns (seconds), else its
    whole duration."""
    started = time.perf_counter()
    try:
        measured = await asyncio.wait_for(probe(), timeout)
    except Exception as exc:
        return {"ok": False, "error": _failure(exc)}
    elapsed = measured if isinstance(measured, float) else time.perf_counter() - started
    return {"ok": True, "latency_ms": round(elapsed * 1000, 2)}


async def database_check(*, database=None, timeout: float = HEALTH_CHECK_TIMEOUT_S) -> dict:
    """`SELECT 1` on `database` (a Django connection; default: the default one)."""

    def probe() -> None:
        conn = database or connections[DEFAULT_DB_ALIAS]
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
        finally:
            if database is not None:
                database.close()

    return await _timed(lambda: _in_thread(probe), timeout)


async def redis_check(*, url: str | None = None, timeout: float = HEALTH_CHECK_TIMEOUT_S) -> dict:
    """PING on a fresh connection to `url` (default: REDIS_URL)."""

    async def probe() -> None:
        client = redis_asyncio.Redis.from_url(
            url or settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout
        )
        try:
            await client.ping()
        finally:
            await client.aclose()

    return await _timed(probe, timeout)


async def _channel_drop(layer, channel: str) -> None:
    """Forget a channel made by new_channel. channels_redis has no delete_channel; a
    receive that is cancelled unsubscribes, so one is started and cancelled at once."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(layer.receive(channel), CHANNEL_DROP_S)


async def channel_layer_check(*, layer=None, timeout: float = HEALTH_CHECK_TIMEOUT_S) -> dict:
    """A round trip: a message sent to a fresh channel of `layer` (default: the project's
    channel layer) and received back."""

    async def probe() -> float:
        channel_layer = layer or get_channel_layer()
        channel = await channel_layer.new_channel("health.")
        nonce = uuid.uuid4().hex
        try:
            sent = time.perf_counter()
            await channel_layer.send(channel, {"type": "health.ping", "nonce": nonce})
            # Cancelled by the timeout, the receive unsubscribes by itself.
            message = await channel_layer.receive(channel)
            round_trip = time.perf_counter() - sent
        except Exception:
            await _channel_drop(channel_layer, channel)
            raise
        await _channel_drop(channel_layer, channel)
        if message.get("nonce") != nonce:
            raise RuntimeError("the channel layer returned another message")
        return round_trip

    return await _timed(probe, timeout)


async def publisher_check(
    *, lag_limit_ms: int = PUBLISHER_LAG_LIMIT_MS, timeout: float = HEALTH_CHECK_TIMEOUT_S
) -> dict:
    """The publisher's lag (age of the oldest unpublished change) and backlog."""
    try:
        backlog = await asyncio.wait_for(_in_thread(publisher_backlog), timeout)
    except Exception as exc:
        return {"ok": False, "lag_ms": None, "pending": None, "error": _failure(exc)}
    return {
        "ok": backlog.lag_ms <= lag_limit_ms,
        "lag_ms": backlog.lag_ms,
        "pending": backlog.pending,
    }


async def connections_check(*, timeout: float = HEALTH_CHECK_TIMEOUT_S) -> dict:
    """Connection counts by transport; None each when they cannot be read."""
    try:
        return await asyncio.wait_for(_in_thread(connection_counts), timeout)
    except Exception:
        return dict.fromkeys([*Transport.values, "total"])


async def health_report() -> dict:
    """Every check at once; each catches its own failure."""
    database, redis, layer, publisher, counts = await asyncio.gather(
        database_check(),
        redis_check(),
        channel_layer_check(),
        publisher_check(),
        connections_check(),
    )
    checks = {"database": database, "redis": redis, "channel_layer": layer, "publisher": publisher}
    healthy = all(check["ok"] for check in checks.values())
    return {"status": "ok" if healthy else "degraded", "checks": checks, "connections": counts}


class HealthView(APIView):
    """200 when the database, Redis, the channel layer and the publisher are well, else
    503. Neither authenticated nor throttled: both need the database or Redis, and a
    health probe must be answered when they are down."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema(
        responses={200: HealthSerializer, 503: OpenApiResponse(HealthSerializer, "degraded")}
    )
    def get(self, request: Request) -> Response:
        report = async_to_sync(health_report)()
        status = http_status.HTTP_200_OK if report["status"] == "ok" else 503
        return Response(report, status=status, headers={"Cache-Control": "no-store"})
