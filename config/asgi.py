"""ASGI entry point: HTTP through Django (except the Channels HTTP routes, such as the SSE
stream), WebSocket through Channels; daphne serves both."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.core.asgi import get_asgi_application

# Django must be set up before anything imports models (routing, consumers).
django_app = get_asgi_application()

from config.static_files import static_files_app  # noqa: E402

# Static files are answered before Django's middleware: with DEBUG off, the hashed names
# collectstatic wrote, cacheable for a year by a CDN (config/static_files.py).
django_asgi_app = static_files_app(django_app)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from realtime.auth import TokenAuthMiddleware  # noqa: E402
from realtime.client_address import ClientAddressMiddleware  # noqa: E402
from realtime.handlers import SharedThreadASGIHandler  # noqa: E402
from realtime.origin import allowed_hosts_origin_validator  # noqa: E402
from realtime.routing import http_urlpatterns, websocket_urlpatterns  # noqa: E402
from realtime.server import (  # noqa: E402
    daphne_websocket_limits_install,
    garbage_collector_tune,
)

daphne_websocket_limits_install()

# Every consumer and view sees the client address one way (realtime/client_address.py):
# the per-address limits key on it.
application = ClientAddressMiddleware(
    ProtocolTypeRouter(
        {
            # The live HTTP routes (authenticated inside http_urlpatterns), the long polls
            # (Django without a thread per request: realtime/handlers.py), then Django.
            "http": URLRouter(
                [
                    *http_urlpatterns,
                    re_path(r"^api/updates/latest/", SharedThreadASGIHandler()),
                    re_path(r"", django_asgi_app),
                ]
            ),
            "websocket": allowed_hosts_origin_validator(
                AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns)))
            ),
        }
    )
)

# Last, once everything the process needs at start-up is loaded.
garbage_collector_tune()
