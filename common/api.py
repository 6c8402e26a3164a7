"""What every REST endpoint of the apps shares: a base view whose dependency failures answer
503, and the validated JSON body of a request."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.errors import ApplicationError, PayloadTooLarge, Unavailable
from common.json import json_too_deep

logger = logging.getLogger(__name__)


class ApiView(APIView):
    """A DRF view whose dependency failures (database, Redis) answer 503, not 500."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, (DatabaseError, RedisError, OSError)):
            logger.warning("%s failed: %r", type(self).__name__, exc)
            exc = Unavailable("A service this endpoint needs is unavailable; retry shortly.")
        return super().handle_exception(exc)


def request_body(request: Request, limit: int) -> bytes:
    """The raw body; 413 when it is, or says it is, over `limit` bytes (read no further)."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    too_large = PayloadTooLarge(f"The body is limited to {limit} bytes.")
    if declared > limit:
        raise too_large
    try:
        raw = request.body
    except RequestDataTooBig:
        raise too_large from None
    if len(raw) > limit:
        raise too_large
    return raw


def json_body(request: Request, serializer_class) -> dict:
    """The validated JSON body; 413 over REALTIME_MAX_FRAME_BYTES (the largest client
    message, PROTOCOL.md), 400 when malformed or nested too deep."""
    raw = request_body(request, settings.REALTIME_MAX_FRAME_BYTES)
    # DRF's parser would recurse as deep as the interpreter lets it (and 3.11's RecursionError
    # is not a ParseError to DRF): the depth limit is checked first, the same on every Python.
    if json_too_deep(raw.decode(errors="replace")):
        raise ApplicationError("The JSON is nested too deeply.", code="malformed_request")
    data = request.data
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
