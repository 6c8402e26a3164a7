"""Rate limiters on the deployment's Redis (the `limits` library, fixed windows: two Redis
commands per hit and an exact Retry-After), one way for every app.

The limiters share the key prefix `<REDIS_PREFIX>:limits`; each caller names its own
namespace in `hit()`. A `unix://` REDIS_URL works like `redis://` (the library spells it
`redis+unix://`). Sync limiters are built once per timeout; async ones once per event
loop as well, since their Redis connections belong to the loop that made them."""

from __future__ import annotations

import asyncio
import weakref

from django.conf import settings
from limits import aio, storage, strategies

from common.redis_connection import redis_async_pool, redis_pool

_SYNC_SCHEMES = {"unix": "redis+unix"}
_ASYNC_SCHEMES = {"redis": "async+redis", "rediss": "async+rediss", "unix": "async+redis+unix"}

_sync: dict[float, strategies.FixedWindowRateLimiter] = {}
_async: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def storage_uri(url: str, *, asynchronous: bool = False) -> str:
    """REDIS_URL as the `limits` library names it."""
    scheme, _, rest = url.partition("://")
    if asynchronous:
        return f"{_ASYNC_SCHEMES.get(scheme, 'async+' + scheme)}://{rest}"
    return f"{_SYNC_SCHEMES.get(scheme, scheme)}://{rest}"


def rate_limiter(*, timeout_s: float) -> strategies.FixedWindowRateLimiter:
    """A limiter whose Redis calls give up after `timeout_s` (the caller decides what a
    Redis that does not answer means: refuse, or let the request through)."""
    limiter = _sync.get(timeout_s)
    if limiter is None:
        # The pool decides where the commands go (the master, through Sentinel or not);
        # the URI only tells the library which client to build around it.
        backend = storage.RedisStorage(
            storage_uri(settings.REDIS_URL),
            connection_pool=redis_pool(socket_timeout=timeout_s, socket_connect_timeout=timeout_s),
            key_prefix=f"{settings.REDIS_PREFIX}:limits",
        )
        limiter = _sync[timeout_s] = strategies.FixedWindowRateLimiter(backend)
    return limiter


def rate_limiter_async(*, timeout_s: float) -> aio.strategies.FixedWindowRateLimiter:
    """`rate_limiter` for the running event loop."""
    loop = asyncio.get_running_loop()
    limiters = _async.setdefault(loop, {})
    limiter = limiters.get(timeout_s)
    if limiter is None:
        backend = aio.storage.RedisStorage(
            storage_uri(settings.REDIS_URL, asynchronous=True),
            implementation="redispy",
            connection_pool=redis_async_pool(
                socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            ),
            key_prefix=f"{settings.REDIS_PREFIX}:limits",
        )
        limiter = limiters[timeout_s] = aio.strategies.FixedWindowRateLimiter(backend)
    return limiter
