"""The WebSocket endpoint `/ws/dashboard/updates` (PROTOCOL.md). Thin: it parses client
messages, refuses bad ones, and hands the rest to the connection's LiveSession."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from typing import Any

from aiolimiter import AsyncLimiter
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from common.json import json_loads_client
from realtime import protocol
from realtime.admission import admission_refusal
from realtime.metrics import (
    LIMIT_WS_CONNECTIONS,
    LIMIT_WS_MESSAGES,
    rate_limited_count,
)
from realtime.notification_delivery import session_acknowledge, session_acknowledge_through
from realtime.session import OVER_ADDRESS_CAP, TRANSPORT_REFUSED, LiveSession
from realtime.session_subscriptions import TooManySubscriptions
from realtime.sockets import server_connection

logger = logging.getLogger(__name__)

# How long a close frame may wait on a client that does not read before giving up on it
# (the socket closes with the session anyway).
CLOSE_SEND_TIMEOUT_S = 1.0


def _message_rate() -> AsyncLimiter:
    """A connection's own message allowance: bursts of REALTIME_MESSAGE_RATE, refilled at
    that many per REALTIME_MESSAGE_WINDOW_S. A leaky bucket per connection, held by it and
    gone with it: the moving windows of `limits`' in-memory store shared one dictionary,
    swept by a task that made a thread hop per connection and raced with the clearing of
    a closed connection's key (KeyError in the log, one lock left behind each time)."""
    return AsyncLimiter(settings.REALTIME_MESSAGE_RATE, settings.REALTIME_MESSAGE_WINDOW_S)


def header(scope: dict, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def scope_session_key(scope: dict) -> str | None:
    """The Django session key of the browser's cookie (SessionMiddleware), if any."""
    session = scope.get("session")
    return getattr(session, "session_key", None) if session is not None else None


def client_address(scope: dict) -> str | None:
    """The client's IP address, as a trusted proxy reports it (realtime/client_address.py)."""
    client = scope.get("client")
    return client[0] if client else None


class MessageError(Exception):
    """A client message that is refused with an `error` frame."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _since(value: Any) -> int | dict | None:
    """`since`: absent, a seq, or a map of context to seq."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise MessageError(protocol.INVALID_MESSAGE, "`since` is a seq or a map of seqs.")
    if isinstance(value, int):
        return value
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
        for k, v in value.items()
    ):
        return value
    raise MessageError(protocol.INVALID_MESSAGE, "`since` is a seq or a map of seqs.")


def _contexts(message: dict) -> list[str]:
    contexts = message.get("contexts")
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise MessageError(protocol.INVALID_MESSAGE, "`contexts` is a list of strings.")
    return contexts


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    """One dashboard connection."""

    # No channel-layer channel of its own: the process's hub receives every frame and
    # control message for its connections. A channel per connection would cost a Redis
    # SUBSCRIBE at connect, a queue and a waiting task for as long as it is open.
    # (get_channel_layer answers None for an alias that is not configured.)
    channel_layer_alias = "none: the hub receives for every connection"

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # However the consumer ends (a disconnect, a handler that failed, cancelled
            # when the server stops), its session is released, once.
            session = getattr(self, "session", None)
            if session is not None:
                await session.close()

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch, without its thread hop to close_old_connections before
        every client message: every database call here goes through
        database_sync_to_async, which closes old connections itself. Profiled under
        2,000 pinging clients, that hop was a fifth of the server's CPU.

        Channels' consumer loop stops on any exception a handler raises without running
        `disconnect()`: here a failing handler ends the session (and the socket) first."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        try:
            await handler(message)
        except StopConsumer:
            raise
        except Exception as exc:
            session = getattr(self, "session", None)
            gone = isinstance(exc, OSError)  # the client vanished under an accept or a close
            if gone:
                logger.info("WebSocket %s: the client is gone (%r)", message["type"], exc)
            else:
                logger.exception("WebSocket %s failed; ending the session", message["type"])
            if session is not None:
                await session.end("send_failed" if gone else "error")
            raise StopConsumer() from None

    async def _user(self) -> Any:
        return self.scope.get("user")

    async def connect(self) -> None:
        self.closing = False
        if self.scope.get("auth_error"):
            await self.close(code=protocol.CLOSE_AUTH_REQUIRED)
            return
        refusal = await admission_refusal(transport="websocket", user_of=self._user)
        if refusal is not None:
            # New connections wait (maintenance); open ones stay.
            await self.accept()
            await self.close(
                code=protocol.CLOSE_UNAVAILABLE, reason=f"retry_after={refusal.retry_after_s}"
            )
            return
        await self.accept()
        self.session = LiveSession(
            user=self.scope.get("user"),
            send=self._send_text,
            transport="websocket",
            client_address=client_address(self.scope),
            user_agent=header(self.scope, b"user-agent"),
            session_key=scope_session_key(self.scope),
            connection=self,
            server_connection=server_connection(self.scope),
        )
        self.session.on_end = self._session_ended
        self.rate = _message_rate()
        self.limited_strikes = 0
        # Once a client has pinged, silence means a dead client (4408); any message counts.
        self.keepalive_armed = False
        self.last_message_at = asyncio.get_running_loop().time()
        self.session.on_transport_refused = self._transport_refused
        await self.session.hub.start()
        refused = await self.session.open()
        if refused == OVER_ADDRESS_CAP:
            rate_limited_count(LIMIT_WS_CONNECTIONS)
            await self._close_socket(
                protocol.CLOSE_RATE_LIMITED, f"retry_after={settings.REALTIME_CONNECTION_RETRY_S}"
            )
            return
        if refused == TRANSPORT_REFUSED:
            await self._transport_refused()
            return
        if refused is not None or self.session.closed:
            return
        self.session.hub.transports.add(self)
        self.heartbeat_schedule()
        self.session.hub.beating.add(self)

    async def disconnect(self, code: int) -> None:
        self.closing = True
        if hasattr(self, "session"):
            await self.session.close()

    async def shutdown(self) -> None:
        """The server is stopping: tell the client to reconnect elsewhere (4503)."""
        await self._close_socket(protocol.CLOSE_UNAVAILABLE, "shutting down")

    async def _session_ended(self, reason: str) -> None:
        """The session ended on the server's side: close the socket, if it still is."""
        if reason in ("send_failed", "slow_client"):
            self.closing = True  # gone, or already closed with 4413 by the server
            return
        code = {
            "heartbeat_timeout": protocol.CLOSE_HEARTBEAT_TIMEOUT,
        }.get(reason, protocol.CLOSE_INTERNAL_ERROR)
        await self._close_socket(code, reason.replace("_", " "))

    async def _close_socket(self, code: int, reason: str) -> None:
        """Send a close frame once, without waiting long on a client that does not read."""
        if self.closing:
            return
        self.closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.close(code=code, reason=reason), CLOSE_SEND_TIMEOUT_S)

    async def _transport_refused(self) -> None:
        """The client's refresh policy does not allow WebSocket (any more): 4403."""
        await self._close_socket(
            protocol.CLOSE_TRANSPORT_NOT_ALLOWED, protocol.TRANSPORT_NOT_ALLOWED
        )

    async def _send_text(self, text: str) -> None:
        if not self.closing:
            # Straight to the server's send: this is the per-delivery path.
            await self.frame_send({"type": "websocket.send", "text": text})

    @functools.cached_property
    def frame_send(self):
        """The server's own ASGI send, under Channels' session wrapper when there is one.
        The wrapper saves sessions on HTTP responses only, yet checks the session on every
        message; profiled at 10,000 deliveries/s that check was an eighth of the server's
        CPU. Accept and close still go through it."""
        wrapper = getattr(self.base_send, "__self__", None)
        return getattr(wrapper, "real_send", self.base_send)

    def heartbeat_schedule(self) -> None:
        # Jitter keeps thousands of connections from beating in step.
        interval = settings.REALTIME_HEARTBEAT_S
        self.heartbeat_at = asyncio.get_running_loop().time() + interval * random.uniform(0.8, 1.0)

    async def heartbeat(self, head_seq: int) -> None:
        """Called by the hub's heartbeat loop once heartbeat_at has passed (one loop for
        every connection of the process instead of a task each: less memory per idle
        connection). A client that pinged and then went silent is closed with 4408."""
        silent_for = asyncio.get_running_loop().time() - self.last_message_at
        if self.keepalive_armed and silent_for > settings.REALTIME_CLIENT_TIMEOUT_S:
            await self.session.end("heartbeat_timeout")
            return
        self.heartbeat_schedule()
        await self.session.send(protocol.heartbeat(seq=head_seq))

    # -- receiving ---------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        self.last_message_at = asyncio.get_running_loop().time()
        if text_data is not None and len(text_data) > settings.REALTIME_MAX_FRAME_BYTES:
            await self.close(code=protocol.CLOSE_TOO_LARGE)
            return
        if not await self._within_rate():
            return
        if text_data is None:
            await self.session.send(
                protocol.error(code=protocol.INVALID_MESSAGE, detail="Binary frames are refused.")
            )
            return
        try:
            message = json_loads_client(text_data)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            await self.session.send(
                protocol.error(code=protocol.INVALID_MESSAGE, detail="Send a JSON object.")
            )
            return
        await self.receive_json(message)

    async def _within_rate(self) -> bool:
        if self.rate.has_capacity():
            await self.rate.acquire()  # at once: there is capacity
            return True
        rate_limited_count(LIMIT_WS_MESSAGES)
        self.limited_strikes += 1
        window = settings.REALTIME_MESSAGE_WINDOW_S
        if self.limited_strikes > settings.REALTIME_RATE_LIMIT_STRIKES:
            await self.close(code=protocol.CLOSE_RATE_LIMITED, reason=f"retry_after={window}")
            return False
        await self.session.send(
            protocol.error(
                code=protocol.RATE_LIMITED,
                detail=f"At most {settings.REALTIME_MESSAGE_RATE} messages per {window} s.",
                retry_after=window,
            )
        )
        return False

    async def receive_json(self, content: dict, **kwargs) -> None:
        ref = content.get("ref")
        kind = content.get("type")
        handler = (
            {
                "subscribe": self.on_subscribe,
                "unsubscribe": self.on_unsubscribe,
                "pause": self.on_pause,
                "resume": self.on_resume,
                "ack": self.on_ack,
                "ping": self.on_ping,
            }.get(kind)
            if isinstance(kind, str)
            else None
        )
        try:
            if not isinstance(kind, str):
                raise MessageError(protocol.INVALID_MESSAGE, "`type` is a string.")
            if handler is None:
                raise MessageError(protocol.UNKNOWN_TYPE, f"Unknown message type {kind[:40]!r}.")
            await handler(content, ref)
        except MessageError as exc:
            await self.session.send(protocol.error(code=exc.code, detail=exc.detail, ref=ref))
        except TooManySubscriptions as exc:
            await self.session.send(
                protocol.error(code=protocol.TOO_MANY_SUBSCRIPTIONS, detail=str(exc), ref=ref)
            )

    async def on_subscribe(self, message: dict, ref: Any) -> None:
        contexts = _contexts(message)
        since = _since(message.get("since"))
        epoch = message.get("epoch")
        if epoch is not None and not isinstance(epoch, str):
            raise MessageError(protocol.INVALID_MESSAGE, "`epoch` is a string.")
        await self.session.subscribe(contexts, since=since, epoch=epoch, ref=ref)

    async def on_unsubscribe(self, message: dict, ref: Any) -> None:
        await self.session.unsubscribe(_contexts(message), ref=ref)

    async def on_pause(self, message: dict, ref: Any) -> None:
        await self.session.pause(ref=ref)

    async def on_resume(self, message: dict, ref: Any) -> None:
        await self.session.resume(since=_since(message.get("since")), ref=ref)

    async def on_ack(self, message: dict, ref: Any) -> None:
        seq, notification = message.get("seq"), message.get("notification")
        valid_seq = isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 2**63
        if not valid_seq and not isinstance(notification, str):
            raise MessageError(
                protocol.INVALID_MESSAGE, "`ack` carries a `seq` or a `notification`."
            )
        # An ack has no reply; a notification id that names nothing this client may see
        # is refused (and changes nothing).
        if isinstance(notification, str):
            refused = await session_acknowledge(self.session, notification)
            if refused is not None:
                raise MessageError(protocol.INVALID_MESSAGE, refused)
        if valid_seq:
            await session_acknowledge_through(self.session, seq)

    async def on_ping(self, message: dict, ref: Any) -> None:
        self.keepalive_armed = True
        await self.session.send(protocol.pong(seq=await self.session.hub.head_seq(), ref=ref))
