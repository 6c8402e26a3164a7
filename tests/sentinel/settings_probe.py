"""Run as `python -m tests.sentinel.settings_probe` in the environment under test: builds
every Redis user the product has from its settings (the channel layer, the cache, the
Celery broker connection, the rate limiters, the direct clients, the health check), uses
each once, and prints as JSON which server each one reached. A separate process, since
Django reads its settings once."""

import asyncio
import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from channels.layers import get_channel_layer  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.cache import caches  # noqa: E402
from limits import RateLimitItemPerMinute  # noqa: E402

from adminpanel import redis_store  # noqa: E402
from common.ratelimit import rate_limiter, rate_limiter_async  # noqa: E402
from config.celery import app as celery_app  # noqa: E402
from realtime.health import redis_check  # noqa: E402


def server_of(client) -> dict:
    """The pool's class and the port of the server the client's commands reach."""
    pool = client.connection_pool
    return {
        "pool": type(pool).__name__,
        "service": getattr(pool, "service_name", None),
        "port": int(client.config_get("port")["port"]),
    }


async def asynchronous() -> dict:
    layer = get_channel_layer()
    channel = await layer.new_channel("probe.")
    await layer.send(channel, {"type": "probe", "n": 1})
    received = await asyncio.wait_for(layer.receive(channel), 5)
    shard_client = layer._get_layer()._shards[0]._redis
    limiter = rate_limiter_async(timeout_s=1.0)
    allowed = await limiter.hit(RateLimitItemPerMinute(5), "probe")
    limiter_client = limiter.storage.bridge.storage
    direct = redis_store.redis_async_client()

    async def port_of(client) -> dict:
        return {
            "pool": type(client.connection_pool).__name__,
            "port": int((await client.config_get("port"))["port"]),
        }

    return {
        "channel_layer": {"received": received, **(await port_of(shard_client))},
        "rate_limit_async": {"allowed": allowed, **(await port_of(limiter_client))},
        "redis_async_client": await port_of(direct),
        "health": await redis_check(),
    }


def main() -> None:
    cache = caches["default"]
    cache.set("probe", "through sentinel", 60)
    limiter = rate_limiter(timeout_s=1.0)
    with celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=3)
        broker = {
            "transport": connection.transport.driver_name,
            "scheme": connection.transport_cls,
            **server_of(connection.default_channel.client),
        }
    report = {
        "redis_url": settings.REDIS_URL,
        "channel_layer_hosts": settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"],
        "celery_broker_url": settings.CELERY_BROKER_URL,
        "celery_master_name": settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("master_name"),
        "cache": {"value": cache.get("probe"), **server_of(cache._cache.get_client(write=True))},
        "celery": broker,
        "rate_limit": {
            "allowed": limiter.hit(RateLimitItemPerMinute(5), "probe"),
            **server_of(limiter.storage.storage),
        },
        "redis_client": server_of(redis_store.redis_client()),
        **asyncio.run(asynchronous()),
    }
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
