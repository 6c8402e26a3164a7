from channels.auth import AuthMiddlewareStack
from django.urls import path, re_path

from realtime.auth import TokenAuthMiddleware
from realtime.consumers import DashboardConsumer
from realtime.sse import DashboardStreamConsumer

websocket_urlpatterns = [
    path("ws/dashboard/updates", DashboardConsumer.as_asgi()),
]

# HTTP routes served by Channels consumers instead of Django (config/asgi.py sends every
# other path to Django). Each carries its own authentication: the session cookie, or
# `Authorization: Token <key>` (a bad token sets scope["auth_error"]: 401).
http_urlpatterns = [
    re_path(
        r"^api/stream/dashboard/?$",
        AuthMiddlewareStack(TokenAuthMiddleware(DashboardStreamConsumer.as_asgi())),
    ),
]
