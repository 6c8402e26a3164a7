"""uvicorn's sans-I/O WebSocket protocol, with a closing that lets the client read why.

When a client breaks the protocol (a frame over REALTIME_MAX_FRAME_BYTES: 1009, invalid
UTF-8: 1007), uvicorn writes the close frame and closes the socket at once. The client
is usually still sending the rest of its oversized message, so the kernel answers the
unread bytes with a TCP reset, and a reset makes the client drop what it had not read
yet: the close frame, whose code PROTOCOL.md promises. Measured on loopback, the live
test sending a 2 MiB frame saw a reset instead of 1009 in about one run in three.

Here the socket stays open for a short grace after the close frame, reading and
discarding what still arrives, and closes cleanly (FIN, not RST) when the client has
closed its side or the grace ends. Everything else is uvicorn's implementation, chosen
for its CPU per delivery and idle memory (docs/benchmarks.md).

It also offers the live transports its connection (realtime/sockets.py): frames are
written without waiting on a client that does not read, and a client that lets
REALTIME_MAX_PENDING_BYTES pile up is closed with 4413 `slow_client`.
"""

from __future__ import annotations

import weakref

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from realtime.metrics import websocket_states
from realtime.protocol import CLOSE_SLOW_CLIENT, SLOW_CLIENT
from realtime.sockets import (
    EXTENSION,
    connection_lost_count,
    socket_options_set,
    transport_reset,
)

# Long enough for a client on a slow link to read the close frame; short enough that a
# hostile client cannot hold sockets open with it.
CLOSE_GRACE_S = 1.0


def parser_release(conn) -> None:
    """Break the reference cycle a `websockets` ServerProtocol keeps once its connection
    is over, so it is freed with the connection.

    Its parser is a generator suspended on the next byte (or, after a closing handshake,
    on EOF), and that generator's frame holds the ServerProtocol, which holds the
    generator. uvicorn drops the connection without finishing it (a reset never feeds
    EOF, and even EOF leaves it suspended), so every ended connection left that cycle
    behind: the ServerProtocol with its handshake request and response, headers, reader
    buffer and last frame, several KB. Only a full garbage collection frees such a cycle,
    and the tuned collector of a server process (realtime/server.py) runs one about
    never: with 600 clients resetting and reconnecting, the process held one more
    ServerProtocol per reconnection and grew about 5 KB per reconnection (the churn soak
    measured 46 MB an hour, about 4 KB per reconnection). A parser that failed also
    keeps its exception, whose traceback holds the parser's frames, so the
    ServerProtocol again."""
    parser = getattr(conn, "parser", None)
    if parser is not None:
        parser.close()  # GeneratorExit at the suspended yield: its frames let go
    if getattr(conn, "parser_exc", None) is not None:
        conn.parser_exc = None


class GracefulCloseWebSocketProtocol(WebSocketsSansIOProtocol):
    """WebSocketsSansIOProtocol that drains instead of resetting after a protocol error."""

    draining = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        socket_options_set(transport)
        websocket_states.add(self.conn)

    def handle_connect(self, event) -> None:
        super().handle_connect(event)
        # A weak proxy: the scope naming this protocol would be a reference cycle, freed
        # only by a full collection (rare in a server process: realtime/server.py).
        self.scope["extensions"][EXTENSION] = weakref.proxy(self)

    def connection_lost(self, exc) -> None:
        connection_lost_count(exc)
        super().connection_lost(exc)
        parser_release(self.conn)

    def would_block(self) -> bool:
        return not self.writable.is_set()

    async def writable_wait(self) -> None:
        await self.writable.wait()

    def unsent_bytes(self) -> int:
        return self.transport.get_write_buffer_size()

    def abort_slow(self) -> None:
        """Close with 4413 `slow_client` at once, without waiting for the client to read
        what is before the close frame; abort after the grace if it still does not."""
        if self.close_sent or self.transport.is_closing():
            return
        self.queue.put_nowait(
            {"type": "websocket.disconnect", "code": CLOSE_SLOW_CLIENT, "reason": SLOW_CLIENT}
        )
        self.conn.send_close(CLOSE_SLOW_CLIENT, SLOW_CLIENT)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()
        self.loop.call_later(CLOSE_GRACE_S, transport_reset, self.transport)

    def handle_parser_exception(self) -> None:
        assert self.conn.close_sent is not None
        self.queue.put_nowait(
            {
                "type": "websocket.disconnect",
                "code": self.conn.close_sent.code,
                "reason": self.conn.close_sent.reason,
            }
        )
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.draining = True
        self.loop.call_later(CLOSE_GRACE_S, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if self.draining:
            return  # the rest of a message already refused
        super().data_received(data)

    def eof_received(self) -> bool | None:
        if self.draining:
            self.transport.close()
        return super().eof_received()
