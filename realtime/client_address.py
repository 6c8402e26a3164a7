"""The client address every per-address limit keys on.

The web server (config/serve.py) runs uvicorn with `proxy_headers`: when the direct peer
is in FORWARDED_ALLOW_IPS, uvicorn's ProxyHeadersMiddleware replaces `scope["client"]`
with the address the proxy reports in X-Forwarded-For (the nearest one that is not
itself a trusted proxy); from any other peer the header is ignored. Nothing else in the
project reads X-Forwarded-For: the WebSocket and SSE connection caps
(`realtime.consumers.client_address`), the poll rate and the engagement rate
(`REMOTE_ADDR`, which Django takes from `scope["client"]`) and DRF's throttles
(`NUM_PROXIES = 0`: `REMOTE_ADDR` as well) all read the address that uvicorn decided on.

ClientAddressMiddleware then writes that address one way, so that one client is one key:
`::ffff:203.0.113.1` (a dual-stack socket) is `203.0.113.1`, `2001:DB8:0::1` is
`2001:db8::1`. A trusted proxy can still report something that is not an address
(`unknown`, garbage a client sent through a proxy that passes the header on): such
clients share one allowance under UNKNOWN_ADDRESS rather than break the connection
table (its `client_address` column is PostgreSQL `inet`) or escape the limits.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

logger = logging.getLogger(__name__)

# Where clients whose reported address is not an IP address are counted, together: the
# unspecified address is never a real peer, and fits the `inet` column.
UNKNOWN_ADDRESS = "0.0.0.0"

_warned = False


def address_normalize(host: str | None) -> str | None:
    """The canonical text of an IP address; UNKNOWN_ADDRESS for anything else (None for
    no address at all: a Unix socket peer)."""
    if host is None:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        _warn_not_an_address(host)
        return UNKNOWN_ADDRESS
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        # A zone (`fe80::1%eth0`) names the server's interface, not the client.
        return str(address).partition("%")[0]
    return str(address)


def _warn_not_an_address(host: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning(
            "client address %r is not an IP address (a trusted proxy in FORWARDED_ALLOW_IPS "
            "forwarded it); such clients share the limits of %s. Logged once per process.",
            host[:100],
            UNKNOWN_ADDRESS,
        )


class ClientAddressMiddleware:
    """ASGI middleware: `scope["client"]` carries the normalized address."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        client = scope.get("client")
        if scope["type"] in ("http", "websocket") and client:
            host = address_normalize(client[0])
            if host != client[0]:
                scope = {**scope, "client": (host, client[1])}
        await self.app(scope, receive, send)
