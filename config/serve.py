"""The web server process: uvicorn (with the `websockets` implementation and uvloop)
serving `config.asgi:application`, HTTP and WebSocket.

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
X-Forwarded-For is trusted from FORWARDED_ALLOW_IPS (uvicorn's variable) only.
"""

from __future__ import annotations

import argparse
import os


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the dashboards (HTTP and WebSocket).")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("WEB_PORT", "8000")))
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import uvicorn
    from django.conf import settings

    uvicorn.run(
        "config.asgi:application",
        host=args.host,
        port=args.port,
        # WEB_WS picks another of uvicorn's WebSocket implementations, for comparisons.
        ws=os.environ.get("WEB_WS", "websockets"),
        ws_max_size=settings.REALTIME_MAX_FRAME_BYTES,
        # Django's ASGI handler does not speak lifespan.
        lifespan="off",
        proxy_headers=True,
        forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        access_log=os.environ.get("WEB_ACCESS_LOG", "1") == "1",
        log_level=os.environ.get("LOG_LEVEL", "INFO").lower(),
        # On SIGTERM the hub closes every WebSocket with 4503 first (realtime/hub.py);
        # what is still open (SSE streams, long polls) gets this long to finish.
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
