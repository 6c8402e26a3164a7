"""uvicorn's httptools HTTP protocol, offering the live transports its connection
(realtime/sockets.py): SSE streams write without waiting on a client that does not read,
and end one that lets REALTIME_MAX_PENDING_BYTES pile up."""

from __future__ import annotations

import weakref

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from realtime.sockets import (
    EXTENSION,
    connection_lost_count,
    socket_options_set,
    transport_reset,
)


class LiveHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        socket_options_set(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # A weak proxy: the scope naming this protocol would be a reference cycle, freed
        # only by a full collection (rare in a server process: realtime/server.py).
        self.scope["extensions"] = {EXTENSION: weakref.proxy(self)}

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # The WebSocket protocol has the connection now. The parser calls back into this
        # object (a reference cycle uvicorn breaks only in connection_lost, which an
        # upgraded connection never reaches here): let go, so it is freed at once.
        self.parser = None

    def connection_lost(self, exc) -> None:
        connection_lost_count(exc)
        super().connection_lost(exc)

    def would_block(self) -> bool:
        return self.flow.write_paused

    async def writable_wait(self) -> None:
        await self.flow.drain()

    def unsent_bytes(self) -> int:
        return self.transport.get_write_buffer_size()

    def abort_slow(self) -> None:
        # Nothing more can reach a client that does not read: drop what is buffered. The
        # stream's task hears `http.disconnect` and releases its session; the browser
        # reconnects with its Last-Event-ID.
        transport_reset(self.transport)
