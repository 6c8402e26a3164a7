"""The SSE stream's codec: what a request asks for (its query, cursors and resume
token), the `Last-Event-ID` cursor tokens, and events as the stream writes them
(PROTOCOL.md, *Server-Sent Events*)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings

from realtime import protocol
from realtime.admission import subscriptions_over_cap
from realtime.consumers import header

logger = logging.getLogger(__name__)

# Characters of the epoch kept in a cursor token: enough to tell two lineages apart
# (md5 hex, 1 in 4 billion), short enough to keep the token small.
TOKEN_EPOCH_CHARS = 8
TOKEN_VERSION = "1"
# Longest `epoch` query value accepted (epochs are 32 hex characters).
MAX_EPOCH_CHARS = 100
# A seq is a PostgreSQL bigint.
MAX_SEQ = 2**63 - 1


_SEQ = re.compile(r"^[0-9]{1,19}$")
_TOKEN_BODY = re.compile(r"^[A-Za-z0-9_-]+$")
# The head of a batch as json_dumps writes it (`type` first, then context and seqs):
# enough to move the cursor without decoding hundreds of items.
_BATCH_HEAD = re.compile(
    r'^\{"type":"batch","context":("(?:[^"\\]|\\.)*"),"seq_from":-?\d+,"seq_to":(\d+)'
)
_TYPE_HEAD = re.compile(r'^\{"type":"([A-Za-z_.]{1,40})"')


# -- the request -----------------------------------------------------------------------


class StreamRefused(Exception):
    """A request answered with a JSON error instead of a stream."""

    def __init__(self, status: int, code: str, detail: str, headers: list | None = None):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or []


def _invalid(detail: str) -> StreamRefused:
    return StreamRefused(400, "invalid_parameter", detail)


@dataclass(frozen=True)
class StreamRequest:
    """What a client asked for: contexts (as written), `since`, `epoch`, the cursor token."""

    contexts: list[str]
    since: int | None = None
    epoch: str | None = None
    last_event_id: str | None = None


def stream_request_parse(scope: dict) -> StreamRequest:
    """Read the query string and `Last-Event-ID`; StreamRefused (400) if unusable.

    `contexts` may be repeated (the lists are joined); empty items are skipped. Other
    parameters are ignored, since EventSource polyfills and cache busters add their own,
    except `lastEventId`, which polyfills send in place of the header.
    """
    raw = scope.get("query_string", b"")
    if len(raw) > settings.REALTIME_SSE_MAX_QUERY_BYTES:
        raise _invalid(
            f"The query string is limited to {settings.REALTIME_SSE_MAX_QUERY_BYTES} bytes."
        )
    try:
        pairs = parse_qsl(
            raw.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise _invalid("The query string is not percent-encoded UTF-8.") from None

    contexts: list[str] = []
    single: dict[str, str] = {}
    for name, value in pairs:
        if name == "contexts":
            contexts.extend(item.strip() for item in value.split(",") if item.strip())
        elif name in ("since", "epoch", "lastEventId"):
            if name in single:
                raise _invalid(f"`{name}` is given more than once.")
            single[name] = value
    contexts = list(dict.fromkeys(contexts))
    if not contexts:
        raise _invalid("`contexts` lists at least one context, comma separated.")
    if over := subscriptions_over_cap(len(contexts), per="stream"):
        raise StreamRefused(400, protocol.TOO_MANY_SUBSCRIPTIONS, over)

    since = None
    if "since" in single:
        if not _SEQ.match(single["since"]) or int(single["since"]) > MAX_SEQ:
            raise _invalid("`since` is a seq: a non-negative integer.")
        since = int(single["since"])
    epoch = single.get("epoch") or None
    if epoch is not None and len(epoch) > MAX_EPOCH_CHARS:
        raise _invalid("`epoch` is too long to be an epoch.")

    last_event_id = header(scope, b"last-event-id") or single.get("lastEventId") or None
    return StreamRequest(contexts=contexts, since=since, epoch=epoch, last_event_id=last_event_id)


# -- cursor tokens ---------------------------------------------------------------------


def cursor_token(epoch: str, cursors: dict[str, int]) -> str:
    """The opaque `id:` of a batch event: the epoch and every context's cursor."""
    body = "|".join([epoch[:TOKEN_EPOCH_CHARS], *(f"{c}={s}" for c, s in cursors.items())])
    encoded = base64.urlsafe_b64encode(body.encode()).rstrip(b"=").decode("ascii")
    return f"{TOKEN_VERSION}.{encoded}"


@dataclass(frozen=True)
class CursorToken:
    """A decoded `Last-Event-ID`."""

    epoch_prefix: str
    cursors: dict[str, int] = field(default_factory=dict)


def cursor_token_decode(token: str) -> CursorToken | None:
    """The cursors of a token made by `cursor_token`; None for anything else."""
    version, _, encoded = token.strip().partition(".")
    # A longer `Last-Event-ID` cannot be one of ours.
    too_long = len(token) > settings.REALTIME_SSE_MAX_QUERY_BYTES
    if version != TOKEN_VERSION or too_long or not _TOKEN_BODY.match(encoded):
        return None
    try:
        body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, ValueError):
        return None
    epoch_prefix, *parts = body.split("|")
    if not epoch_prefix or len(parts) > settings.REALTIME_MAX_SUBSCRIPTIONS:
        return None
    cursors: dict[str, int] = {}
    for part in parts:
        context, _, seq = part.rpartition("=")
        if not context or not _SEQ.match(seq) or int(seq) > MAX_SEQ:
            return None
        cursors[context] = int(seq)
    return CursorToken(epoch_prefix, cursors)


# -- events ----------------------------------------------------------------------------


def sse_event(kind: str, data: str, event_id: str | None = None) -> bytes:
    """One event: `event:`, optional `id:`, `data:` lines, blank line."""
    lines = [f"event: {kind}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if "\n" in data or "\r" in data:
        # Encoded JSON never holds raw line breaks; split anyway rather than corrupt.
        lines.extend(f"data: {line}" for line in data.splitlines())
    else:
        lines.append(f"data: {data}")
    return ("\n".join(lines) + "\n\n").encode()


def batch_position(text: str) -> tuple[str, int]:
    """The context and seq_to of an encoded batch."""
    match = _BATCH_HEAD.match(text)
    if match:
        return json.loads(match.group(1)), int(match.group(2))
    body = json.loads(text)
    return body["context"], int(body["seq_to"])


def message_type(text: str) -> str:
    match = _TYPE_HEAD.match(text)
    if match:
        return match.group(1)
    try:
        kind = json.loads(text).get("type")
    except (ValueError, AttributeError):
        kind = None
    return kind if isinstance(kind, str) else "message"


def since_value(value: Any) -> int | dict | None:
    """`since` of a group message: a seq or a map of seqs; anything else is ignored."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
        for k, v in value.items()
    ):
        return value
    return None
