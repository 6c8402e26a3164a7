"""HTTP endpoints of the live protocol (PROTOCOL.md): the polling fallback, the change
log's status, health, liveness, and subscribe / acknowledge for SSE and polling sessions.

The views stay thin: the polling logic (query parsing, reading a page, ETags, the long
poll, the rate limit) lives in `realtime.polling`, the health checks in
`realtime.health`, reads of connections in `realtime.selectors`, the acknowledge write in
`realtime.services`, and the publisher's backlog in `changes.selectors`.

The poll is a plain async Django view: a long poll parks on the process's hub and is
woken by the channel layer, which a (sync) DRF view cannot do without holding a thread.
It does what DRF would otherwise do itself: token or session authentication, a rate
limit (per client address, in Redis) and the project's JSON error shape. The other
endpoints are DRF views with the project's authentication (CSRF enforced for browsers
signed in with the session cookie), throttles and error handler.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseNotModified
from django.utils.cache import patch_vary_headers
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, extend_schema
from redis.exceptions import RedisError
from rest_framework import status as http_status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from changes.items import format_at
from changes.selectors import change_log_state, publisher_backlog
from common.api import ApiView, json_body
from common.errors import ApplicationError, Unavailable, error_body
from common.json import json_dumps
from emissions.access import audience_of
from notifications.selectors import notifications_for_poll, receipt_client_key
from notifications.services import (
    notification_attempts_record,
)
from realtime import protocol
from realtime.admission import admission_refusal, status_figures
from realtime.auth import user_for_token
from realtime.health import health_report
from realtime.hub import get_hub
from realtime.metrics import LIMIT_POLLS, rate_limited_count
from realtime.models import Transport
from realtime.policy import transport_permitted
from realtime.polling import (
    PollAnswer,
    etag_matches,
    long_poll,
    poll_answer,
    poll_page,
    poll_query_parse,
    poll_retry_after,
    poll_scope,
)
from realtime.serializers import (
    AcknowledgeSerializer,
    HealthSerializer,
    StatusSerializer,
    SubscribedSerializer,
    SubscribeSerializer,
)
from realtime.services import SERVER
from realtime.subscriptions import acknowledgement_record, subscription_add

logger = logging.getLogger(__name__)


def _json_response(body: Any, status: int = 200, headers: dict | None = None) -> HttpResponse:
    # json_dumps, not JsonResponse: change items hold Decimals, sent as JSON numbers.
    return HttpResponse(
        json_dumps(body), status=status, content_type="application/json", headers=headers
    )


def _error_response(exc: ApplicationError, headers: dict | None = None) -> HttpResponse:
    return _json_response(error_body(exc.code, exc.detail), exc.status_code, headers)


# -- polling: authentication -------------------------------------------------------------


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
    if (refusal := await _poll_admission(request)) is not None:
        return refusal
    retry_after = await poll_retry_after(request.META.get("REMOTE_ADDR") or "unknown")
    if retry_after is not None:
        rate_limited_count(LIMIT_POLLS)
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
        if not await transport_permitted(user=user, transport=Transport.POLLING):
            raise ApplicationError(
                "Your refresh policy does not allow polling.",
                code=protocol.TRANSPORT_NOT_ALLOWED,
                status_code=403,
            )
        return await _poll(request, cursor, user)
    except ApplicationError as exc:
        return _error_response(exc)
    except (DatabaseError, RedisError, OSError):
        logger.exception("poll failed")
        return _error_response(Unavailable("The change log is unavailable; retry shortly."))


_poll_scope = database_sync_to_async(poll_scope)


async def _poll_admission(request: HttpRequest) -> HttpResponse | None:
    """503 with Retry-After while new connections are refused (maintenance): each poll is
    a new request, refused like a new connection (staff admitted as on the other
    transports)."""

    async def user_of() -> Any:
        try:
            return await _poll_user(request)
        except _BadToken:
            return None  # refused before the bad token is even looked at

    refusal = await admission_refusal(transport="polling", user_of=user_of)
    if refusal is None:
        return None
    return _error_response(
        ApplicationError(refusal.message, code=refusal.code, status_code=503),
        headers={"Retry-After": str(refusal.retry_after_s)},
    )


async def _poll(request: HttpRequest, cursor: str, user: Any) -> HttpResponse:
    query = poll_query_parse(cursor, request.GET)
    audience = audience_of(user)
    scope = await _poll_scope(query=query, user=user)
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

    # Notifications for this client ride along (docs/protocol.md, `notifications`).
    client = receipt_client_key(
        user=user,
        session_key=getattr(getattr(request, "session", None), "session_key", None),
        connection_id=query.session,
    )
    carried: list = []

    def read_page(fresh_through: int = 0) -> dict:
        page = poll_page(
            scope=scope,
            audience=audience,
            limit=query.limit,
            epoch=query.epoch,
            fresh_through=fresh_through,
        )
        carried[:] = notifications_for_poll(
            client=client,
            audience=audience,
            contexts=scope.contexts,
            limit=settings.NOTIFY_POLL_MAX,
            recent=dt.timedelta(seconds=settings.NOTIFY_POLL_RECENT_S),
        )
        page["notifications"] = [item.message for item in carried]
        return page

    async def read(fresh_through: int = 0) -> PollAnswer:
        page = await database_sync_to_async(read_page)(fresh_through)
        # Only a notification new to the client answers a long poll at once; one awaiting
        # acknowledgement rides along with the next answer.
        return poll_answer(page, query_key, fresh=any(item.fresh for item in carried))

    if_none_match = request.headers.get("If-None-Match")

    def done(answer: PollAnswer) -> bool:
        # Something to say that the client does not already hold.
        return answer.news and not etag_matches(if_none_match, answer.etag)

    answer = await read()
    if query.wait > 0 and scope.contexts and not done(answer):
        answer = await long_poll(
            read, contexts=scope.contexts, audience=audience, wait=query.wait, done=done
        )
    if etag_matches(if_none_match, answer.etag):
        return _poll_headers(HttpResponseNotModified(), answer.etag)
    if carried and client is not None:
        await database_sync_to_async(notification_attempts_record)(
            attempts=[(item.message["id"], client, 1) for item in carried]
        )
    return _poll_headers(HttpResponse(answer.body, content_type="application/json"), answer.etag)


# -- DRF endpoints -------------------------------------------------------------------------


class SubscribeView(ApiView):
    """Add contexts to an SSE or polling session; replies like `subscribed`."""

    @extend_schema(
        request=SubscribeSerializer,
        responses={200: SubscribedSerializer, 400: None, 404: None, 413: None, 503: None},
    )
    def post(self, request: Request) -> Response:
        data = json_body(request, SubscribeSerializer)
        return Response(
            subscription_add(user=request.user, session=data["session"], contexts=data["contexts"])
        )


class AcknowledgeView(ApiView):
    """Record that a session received everything up to `seq` (or one notification)."""

    @extend_schema(
        request=AcknowledgeSerializer,
        responses={204: None, 400: None, 404: None, 413: None},
    )
    def post(self, request: Request) -> Response:
        data = json_body(request, AcknowledgeSerializer)
        acknowledgement_record(
            user=request.user,
            session_key=getattr(getattr(request, "session", None), "session_key", None),
            session=data["session"],
            seq=data.get("seq"),
            notification=data.get("notification"),
        )
        return Response(status=http_status.HTTP_204_NO_CONTENT)


class UpdatesStatusView(ApiView):
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
                **status_figures(),
                "last_published_at": (
                    format_at(state.last_published_at) if state.last_published_at else None
                ),
            }
        )


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


@csrf_exempt  # as updates_latest: other methods get the JSON 405, not the CSRF page
async def realtime_live(request: HttpRequest) -> HttpResponse:
    """`GET /api/realtime/live`: whether this process serves, for a load balancer's health
    check (config/haproxy): 200 `{"status": "serving", "process": ...}`, or 503
    `"draining"` once SIGTERM reached its hub (realtime/hub_housekeeping.py), so no new
    client is sent to a process that is closing its connections.

    Reads neither PostgreSQL nor Redis, unlike /api/realtime/health: a Redis blip must not
    take every process out of the balancer at once, and a process that serves can catch
    its clients up from the log once Redis is back. A plain async view: no DRF
    authentication or throttle, no thread, nothing counted against a client's limits."""
    if request.method not in ("GET", "HEAD"):
        return _error_response(
            ApplicationError(
                f"Method {request.method[:10]} is not allowed.",
                code="method_not_allowed",
                status_code=405,
            ),
            headers={"Allow": "GET, HEAD"},
        )
    # The hub of this process's loop: made (not started) if no client connected yet.
    draining = get_hub().stopping
    return _json_response(
        {"status": "draining" if draining else "serving", "process": SERVER},
        503 if draining else 200,
        {"Cache-Control": "no-store"},
    )
