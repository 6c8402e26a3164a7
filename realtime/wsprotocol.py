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
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

# Long enough for a client on a slow link to read the close frame; short enough that a
# hostile client cannot hold sockets open with it.
CLOSE_GRACE_S = 1.0


class GracefulCloseWebSocketProtocol(WebSocketsSansIOProtocol):
    """WebSocketsSansIOProtocol that drains instead of resetting after a protocol error."""

    draining = False

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
