"""What the live transports need of the server's connection objects beyond ASGI.

The web server's protocol classes (realtime/wsprotocol.py for WebSocket,
realtime/httpprotocol.py for HTTP, so SSE streams) put themselves in the scope as
`scope["extensions"]["carbon.connection"]`, giving a connection's outbox
(realtime/outbox.py) what ASGI does not:

- `would_block()`: whether an ASGI send would wait for the client to read (the
  transport's buffer is above its high-water mark). The hub hands every frame to every
  connection in turn; waiting on one client that does not read would delay all others.
- `writable_wait()`: until the client has read enough that a send would not wait.
- `unsent_bytes()`: what the server holds for the client and has not written yet.
- `abort_slow()`: end a client that let REALTIME_MAX_PENDING_BYTES pile up.

Under another server (daphne, the test communicators) the extension is absent and sends
are awaited as ASGI makes them.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from typing import Protocol

from django.conf import settings

from realtime.metrics import session_ended_count

EXTENSION = "carbon.connection"


class ServerConnection(Protocol):
    def would_block(self) -> bool: ...

    async def writable_wait(self) -> None: ...

    def unsent_bytes(self) -> int: ...

    def abort_slow(self) -> None: ...


def server_connection(scope: dict) -> ServerConnection | None:
    """The server's connection object of this scope, when the server offers one."""
    return (scope.get("extensions") or {}).get(EXTENSION)


def socket_options_set(transport) -> None:
    """Options of an accepted socket, for connections that vanish or stop reading.

    - TCP keepalive and TCP_USER_TIMEOUT: a peer that vanished without a FIN (a phone out
      of coverage, a cut network) stops acknowledging, and the kernel ends the connection
      after REALTIME_UNACKED_TIMEOUT_S of unacknowledged data, or of unanswered keepalive
      probes on an idle connection, instead of never.
    - A fixed send buffer (REALTIME_SOCKET_SEND_BUFFER_BYTES): left to autotuning, the
      kernel holds up to 4 MB for a client that stopped reading before the server's own
      buffer grows at all; fixed, a stalled client costs at most twice the setting in the
      kernel plus REALTIME_MAX_PENDING_BYTES in the process.
    """
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    timeout_s = settings.REALTIME_UNACKED_TIMEOUT_S
    probes = 3
    try:
        if settings.REALTIME_SOCKET_SEND_BUFFER_BYTES:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, settings.REALTIME_SOCKET_SEND_BUFFER_BYTES
            )
        if settings.REALTIME_SOCKET_NOTSENT_BYTES:
            sock.setsockopt(
                socket.IPPROTO_TCP,
                socket.TCP_NOTSENT_LOWAT,
                settings.REALTIME_SOCKET_NOTSENT_BYTES,
            )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(timeout_s / 2)))
        sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(timeout_s / 2 / probes))
        )
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, probes)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(timeout_s * 1000))
    except (OSError, AttributeError):
        pass  # not Linux, or not a TCP socket: the transports' own heartbeats remain


def transport_reset(transport) -> None:
    """Abort `transport` with a TCP reset: what it and the kernel hold for the client is
    dropped at once (a plain close would keep sending the kernel's buffer, for as long as
    the client takes to read it)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def connection_lost_count(exc: BaseException | None) -> None:
    """Count a connection the kernel ended because the peer stopped acknowledging for
    REALTIME_UNACKED_TIMEOUT_S (a vanished peer, or a reader whose receive window stayed
    shut that long): `carbon_realtime_sessions_ended_total{reason="unacknowledged"}`."""
    if isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT:
        session_ended_count("unacknowledged")
