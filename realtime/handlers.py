"""Django's ASGI handler for the long polls, without a thread per request.

Django wraps every ASGI request in asgiref's ThreadSensitiveContext, so the request's
synchronous work (its signals, its database calls through sync_to_async) runs on a
thread created for that request and joined at its end. For ordinary pages that lets
slow synchronous views overlap. For long polls, which are async views answering many
times a second per client, it was most of the cost: profiled at 1,000 polling clients,
creating and joining those threads took two thirds of the event loop's time, and one
process answered about 100 polls a second (docs/benchmarks.md). Here the polls share
the process's one synchronous thread, as the WebSocket and SSE sessions do.
"""

from __future__ import annotations

from django.core.handlers.asgi import ASGIHandler


class SharedThreadASGIHandler(ASGIHandler):
    """ASGIHandler whose requests run their synchronous parts on the shared thread."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)
