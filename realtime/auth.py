"""Token authentication for the live transports: `Authorization: Token <key>`.

Browsers use the Django session cookie (Channels' AuthMiddlewareStack); other clients
send a DRF token on the handshake. A token that does not match any user marks the scope
so the consumer can close with 4401 instead of silently treating the client as anonymous.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser
from rest_framework.authtoken.models import Token


def token_from_headers(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key of an `Authorization: Token <key>` header, if there is one."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            if scheme.lower() == "token":
                return key.strip()
            return ""
    return None


@database_sync_to_async
def user_for_token(key: str):
    if not key or len(key) > 64:
        return None
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return None
    return token.user


class TokenAuthMiddleware(BaseMiddleware):
    """Sets scope["user"] from a token header; scope["auth_error"] on a bad token."""

    async def __call__(self, scope, receive, send):
        key = token_from_headers(scope.get("headers", []))
        if key is not None:
            user = await user_for_token(key)
            scope = dict(scope)
            if user is None:
                scope["user"] = AnonymousUser()
                scope["auth_error"] = True
            else:
                scope["user"] = user
        return await super().__call__(scope, receive, send)
