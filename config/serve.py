"""The web server process: uvicorn (with uvloop and its sans-I/O `websockets`
implementation, closing gracefully: realtime/wsprotocol.py) serving
`config.asgi:application`, HTTP and WebSocket.

    python -m config.serve [--host 127.0.0.1] [--port 8000]

uvicorn replaced daphne by measurement (docs/benchmarks.md, issue #5): on the same
application, machine and load, commit to client at 2,000 clients and 200 changes/s was
p50 25 / p99 47 ms under uvicorn against 59 / 107 ms under daphne, and fan-out cost less
server CPU per delivery. daphne writes every frame through Twisted, which registers the
socket for writability and writes on the next loop turn; uvicorn's asyncio transport
writes at once. daphne still works (`daphne config.asgi:application`, and `runserver`),
with the same limits (realtime/server.py).

The protocol's limits are set here from the settings: a client text frame over
REALTIME_MAX_FRAME_BYTES closes with 1009 (the `websockets` library does it), and
X-Forwarded-For is trusted from FORWARDED_ALLOW_IPS only: uvicorn then puts the address
it reports in `scope["client"]`, which every per-address limit keys on
(realtime/client_address.py).
"""

from __future__ import annotations

import argparse
import os

from config.celery import celery_startup_check


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the dashboards (HTTP and WebSocket).")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("WEB_PORT", "8000")))
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # Imported once the settings module is chosen: uvicorn's import reads none, but
    # Django's settings would be configured from the wrong module before this line.
    import django
    import uvicorn
    from django.conf import settings

    django.setup()
    # Whatever this process queues (and the Celery status it reports on health and the
    # monitoring page) must be the configured app and broker: say at once if not.
    celery_startup_check(process="web server")

    uvicorn.run(
        "config.asgi:application",
        host=args.host,
        port=args.port,
        # WEB_WS and WEB_LOOP pick another of uvicorn's WebSocket implementations and event
        # loops, for comparisons (bench/).
        ws=os.environ.get("WEB_WS", "realtime.wsprotocol:GracefulCloseWebSocketProtocol"),
        # Gives the SSE streams their connection (realtime/sockets.py).
        http=os.environ.get("WEB_HTTP", "realtime.httpprotocol:LiveHttpToolsProtocol"),
        loop=os.environ.get("WEB_LOOP", "auto"),
        ws_max_size=settings.REALTIME_MAX_FRAME_BYTES,
        # No permessage-deflate (browsers offer it): the hub sends one encoded frame to
        # thousands of connections, and compressing it again for each would cost CPU per
        # delivery and a zlib state per connection (idle memory measured 152 KB per
        # connection with it, 50 without). daphne does not compress either.
        ws_per_message_deflate=False,
        # WebSocket pings keep idle connections open through proxies and find dead ones.
        ws_ping_interval=settings.WEB_WS_PING_S,
        ws_ping_timeout=settings.WEB_WS_PING_S,
        # Django's ASGI handler does not speak lifespan.
        lifespan="off",
        proxy_headers=True,
        forwarded_allow_ips=settings.FORWARDED_ALLOW_IPS,
        access_log=os.environ.get("WEB_ACCESS_LOG", "1") == "1",
        log_level=os.environ.get("LOG_LEVEL", "INFO").lower(),
        # On SIGTERM the hub closes every WebSocket with 4503 first (realtime/hub_housekeeping.py);
        # what is still open (SSE streams, long polls) gets this long to finish.
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
