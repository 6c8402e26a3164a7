"""The Server-Sent Events endpoint `GET /api/stream/dashboard` (PROTOCOL.md).

The same LiveSession and hub as the WebSocket endpoint; this module only turns the query
and `Last-Event-ID` into a subscribe, and the session's JSON texts into SSE events:

    retry: 3000

    event: hello
    data: {"type":"hello",...}

    event: batch
    id: 1.YWJjZGVmMTJ8Y29tcGFueTo...
    data: {"type":"batch","context":"company:...","seq_from":...}

Only `batch` events carry an `id:`: a cursor token holding every subscribed context's
cursor *after* that batch, so the `Last-Event-ID` a browser sends back on reconnect
resumes each context exactly where it was (realtime/sse_cursors.py keeps them;
realtime/sse_codec.py parses the query and the tokens). Everything that cannot be served
is refused with a JSON error before the first byte of the stream; once streaming,
problems become events (`reset`), never a broken response.

Channels dispatches one message at a time, so the consumer never blocks in a handler:
`http.request` starts the stream and returns, live frames arrive through the hub, and
`http.disconnect` (or a `session.subscribe` group message) is handled as it comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings

from common.errors import error_body
from common.json import json_dumps
from realtime import protocol
from realtime.admission import admission_refusal
from realtime.consumers import client_address, header, scope_session_key
from realtime.groups import session_group
from realtime.hub import get_hub
from realtime.metrics import (
    LIMIT_SSE_CONNECTIONS,
    rate_limited_count,
)
from realtime.session import OVER_ADDRESS_CAP, TRANSPORT_REFUSED, LiveSession
from realtime.session_subscriptions import TooManySubscriptions
from realtime.sockets import server_connection
from realtime.sse_codec import (
    StreamRefused,
    message_type,
    since_value,
    sse_event,
    stream_request_parse,
)
from realtime.sse_cursors import StreamCursors

logger = logging.getLogger(__name__)

# `retry:` sent first: how long a browser waits before reconnecting after the stream
# ends. 3 s is the browsers' own default, said explicitly so every client agrees; a server
# restart then sees its reconnections spread over the jitter of the clients' timers.
RETRY_MS = 3000
# Each wait is 80 to 100 % of REALTIME_SSE_HEARTBEAT_S: thousands of streams do not beat
# in step.
HEARTBEAT_JITTER = 0.2
# How long the end of a stream may wait on a client that does not read.
END_SEND_TIMEOUT_S = 1.0
STREAM_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    # nginx buffers proxied responses unless told not to; an event stream must flow.
    (b"x-accel-buffering", b"no"),
]


# -- the consumer ----------------------------------------------------------------------


class DashboardStreamConsumer(AsyncHttpConsumer):
    """One SSE dashboard stream."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.session: LiveSession | None = None
        self.group: str | None = None
        self.heartbeat: asyncio.Task | None = None
        self.streaming = False  # headers sent
        self.ended = False  # body ended, or the client is gone: write nothing more
        self.cleaned = False
        self.cursors = StreamCursors()
        self.write_lock = asyncio.Lock()
        self.last_write = 0.0

    async def _user(self) -> Any:
        return self.scope.get("user")

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Also when cancelled: daphne cancels every application when the server stops.
            # The body ends properly (the last chunk), so the client sees a clean end and
            # reconnects after `retry`, sending its Last-Event-ID.
            await self._end()
            await self._cleanup()

    # -- request --------------------------------------------------------------------------

    async def http_request(self, message: dict) -> None:
        # The body of a GET means nothing here: not kept, only waited for.
        if self.streaming or message.get("more_body"):
            return
        try:
            await self._start()
        except StreamRefused as refusal:
            await self._refuse(refusal)
            raise StopConsumer() from None
        except (StopConsumer, asyncio.CancelledError):
            raise
        except Exception:
            logger.exception("starting an SSE stream failed")
            if not self.streaming:
                await self._refuse(
                    StreamRefused(503, "unavailable", "The stream could not be started.")
                )
            raise StopConsumer() from None

    async def _start(self) -> None:
        if self.scope.get("method") != "GET":
            raise StreamRefused(
                405, "method_not_allowed", "Only GET opens a stream.", [(b"allow", b"GET")]
            )
        if self.scope.get("auth_error"):
            raise StreamRefused(
                401,
                "authentication_failed",
                "Invalid token.",
                [(b"www-authenticate", b"Token")],
            )
        request = stream_request_parse(self.scope)
        hub = get_hub()
        if hub.stopping:
            retry = str(max(1, RETRY_MS // 1000)).encode()
            raise StreamRefused(
                503, "unavailable", "The server is shutting down.", [(b"retry-after", retry)]
            )
        refusal = await admission_refusal(transport="sse", user_of=self._user)
        if refusal is not None:
            raise StreamRefused(
                503,
                refusal.code,
                refusal.message,
                [(b"retry-after", str(refusal.retry_after_s).encode())],
            )
        address = client_address(self.scope)
        self.session = LiveSession(
            user=self.scope.get("user"),
            send=self._session_send,
            transport="sse",
            client_address=address,
            user_agent=header(self.scope, b"user-agent"),
            hub=hub,
            session_key=scope_session_key(self.scope),
            connection=self,
            server_connection=server_connection(self.scope),
        )
        self.session.on_end = self._session_ended
        # `hello` tells the client how often to expect a heartbeat on this transport.
        self.session.policy["heartbeat_ms"] = int(settings.REALTIME_SSE_HEARTBEAT_S * 1000)
        # The policy may stop allowing SSE while the stream is open: end it (the browser
        # reconnects after `retry` and is refused with 403).
        self.session.on_transport_refused = self._end
        await hub.start()
        admission = await self.session.admit()
        if admission.refused == OVER_ADDRESS_CAP:
            rate_limited_count(LIMIT_SSE_CONNECTIONS)
            retry = str(settings.REALTIME_CONNECTION_RETRY_S).encode()
            raise StreamRefused(
                429,
                protocol.RATE_LIMITED,
                "Too many live connections from this address.",
                [(b"retry-after", retry)],
            )
        if admission.refused == TRANSPORT_REFUSED:
            raise StreamRefused(
                403,
                protocol.TRANSPORT_NOT_ALLOWED,
                "Your refresh policy does not allow Server-Sent Events.",
            )
        if admission.refused is not None:  # gone while being admitted
            return

        await self.send_headers(status=200, headers=STREAM_HEADERS)
        self.streaming = True
        await self._write(f"retry: {RETRY_MS}\n\n".encode())
        # Before `hello` names the session: a subscribe sent as soon as the client
        # knows the session id must find the group.
        self.group = session_group(self.session.id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.session.hello(admission.state)
        if self.session.closed:
            return
        hub.transports.add(self)

        since, epoch = self.cursors.starting_points(request, admission.state)
        try:
            await self.session.subscribe(request.contexts, since=since, epoch=epoch)
        except TooManySubscriptions as exc:  # the query was counted; only a race gets here
            await self.session.send(
                protocol.error(code=protocol.TOO_MANY_SUBSCRIPTIONS, detail=str(exc))
            )
        self.heartbeat = asyncio.create_task(self._heartbeats(), name="sse-heartbeat")

    async def _refuse(self, refusal: StreamRefused) -> None:
        body = json_dumps(error_body(refusal.code, refusal.detail)).encode()
        await self.send_response(
            refusal.status,
            body,
            headers=[(b"content-type", b"application/json"), *refusal.headers],
        )
        self.ended = True

    # -- writing --------------------------------------------------------------------------

    async def _session_send(self, text: str) -> None:
        """LiveSession's `send`: one JSON text as one event."""
        if self.ended:
            return
        kind = message_type(text)
        async with self.write_lock:
            event_id = self.cursors.written(kind, text, self.session)
            await self._write(sse_event(kind, text, event_id))

    async def _write(self, chunk: bytes) -> None:
        if self.ended:
            return
        self.last_write = asyncio.get_running_loop().time()
        await self.send_body(chunk, more_body=True)

    async def _heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.ended:
            interval = settings.REALTIME_SSE_HEARTBEAT_S * random.uniform(1 - HEARTBEAT_JITTER, 1)
            idle = loop.time() - self.last_write
            if idle < interval:
                await asyncio.sleep(interval - idle)
                continue
            try:
                head = await self.session.hub.head_seq()
            except Exception:
                logger.exception("heartbeat could not read the change log state")
                await asyncio.sleep(interval)
                continue
            await self.session.send(protocol.heartbeat(seq=head))

    # -- group messages -------------------------------------------------------------------

    async def session_subscribe(self, message: dict) -> None:
        """`{"type": "session.subscribe", "contexts": [...], "since"?, "epoch"?, "ref"?}`
        from `POST /api/realtime/subscribe`: join more contexts, replying `subscribed`."""
        if self.session is None or self.ended:
            return
        contexts = message.get("contexts")
        if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
            logger.warning("session.subscribe without a list of contexts: %r", message)
            return
        since = self.cursors.group_since(self.session, contexts, since_value(message.get("since")))
        epoch = message.get("epoch") if isinstance(message.get("epoch"), str) else None
        try:
            await self.session.subscribe(contexts, since=since, epoch=epoch, ref=message.get("ref"))
        except TooManySubscriptions as exc:
            await self.session.send(
                protocol.error(
                    code=protocol.TOO_MANY_SUBSCRIPTIONS, detail=str(exc), ref=message.get("ref")
                )
            )

    # -- ending ---------------------------------------------------------------------------

    async def disconnect(self) -> None:
        """The client went away (`http.disconnect`)."""
        self.ended = True
        await self._cleanup()

    async def shutdown(self) -> None:
        """The server is stopping (the hub calls this on SIGTERM): end the body, so the
        client reconnects (to another process) after `retry`, with its Last-Event-ID."""
        await self._end()

    async def _session_ended(self, reason: str) -> None:
        """The session ended on the server's side: end the stream, if it still runs (a
        client too slow was already cut off by the server, realtime/httpprotocol.py)."""
        if reason in ("send_failed", "slow_client"):
            self.ended = True
            return
        await self._end()

    async def _end(self) -> None:
        if self.streaming and not self.ended:
            self.ended = True
            # Bounded: a client that does not read must not hold up a shutdown.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.send_body(b"", more_body=False), END_SEND_TIMEOUT_S)

    async def _cleanup(self) -> None:
        if self.cleaned:
            return
        self.cleaned = True
        if self.heartbeat is not None:
            self.heartbeat.cancel()
        if self.session is not None:
            try:
                await self.session.close()
            except Exception:
                logger.exception("closing SSE session %s failed", self.session.id)
        if self.group is not None:
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(self.group, self.channel_name)
