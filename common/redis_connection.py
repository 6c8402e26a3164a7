"""The one way to reach the deployment's Redis: directly (`REDIS_URL`) or through Redis
Sentinel (`REDIS_SENTINELS` + `REDIS_SENTINEL_MASTER`), for every user of it.

Settings describe the target once (`RedisTarget`) and build from it the channel layer's
host, the cache and the Celery broker; code that needs a client at run time asks
`redis_client()` / `redis_async_client()` / `redis_pool()`, which read `settings.REDIS_URL`.
Through Sentinel, that URL is `redis+sentinel://[:password@]host:port,host:port/master`
(the form the `limits` library reads too), and every connection asks the sentinels for
the current master when it (re)connects: after a failover, the next command or the
pub/sub reconnection lands on the promoted replica without a restart. A new Redis user
that goes through here cannot forget Sentinel.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import redis
import redis.sentinel
from django.conf import settings
from redis import asyncio as redis_asyncio

SENTINEL_SCHEME = "redis+sentinel"
# Sentinel's own port when a host of REDIS_SENTINELS names none.
SENTINEL_DEFAULT_PORT = 26379
# A sentinel that does not answer within this long is skipped for the next one: sentinels
# are queried on every (re)connection, and one that is away must not hold them up.
SENTINEL_TIMEOUT_S = 0.5


def sentinels_parse(text: str) -> tuple[tuple[str, int], ...]:
    """`"h1:26379,h2:26380"` as ((host, port), ...); a host without a port gets 26379.
    Raises ValueError on an empty host or a port that is not a number in 1..65535."""
    found = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, colon, port_text = item.rpartition(":")
        if not colon:
            host, port_text = item, str(SENTINEL_DEFAULT_PORT)
        host = host.strip("[]")  # an IPv6 address written [::1]:26379
        if not host:
            raise ValueError(f"REDIS_SENTINELS: no host in {item!r} (expected host:port)")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"REDIS_SENTINELS: bad port in {item!r} (expected host:port)")
        found.append((host, int(port_text)))
    return tuple(found)


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is: `url` alone (direct), or sentinels and the master's name."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    # The password of the sentinels and of the Redis servers they monitor (one for both).
    password: str | None = None

    @classmethod
    def of_sentinels(
        cls, *, sentinels: str, master: str, password: str | None = None
    ) -> RedisTarget:
        """From REDIS_SENTINELS, REDIS_SENTINEL_MASTER and REDIS_SENTINEL_PASSWORD."""
        hosts = sentinels_parse(sentinels)
        if not hosts:
            raise ValueError("REDIS_SENTINELS names no sentinel (expected host:port,...)")
        if not master or "/" in master:
            raise ValueError("REDIS_SENTINEL_MASTER must name the monitored master")
        auth = f":{quote(password, safe='')}@" if password else ""
        where = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in hosts)
        url = f"{SENTINEL_SCHEME}://{auth}{where}/{quote(master, safe='')}"
        return cls(url=url, sentinels=hosts, master=master, password=password or None)

    @classmethod
    def parse(cls, url: str) -> RedisTarget:
        """A `redis://`-like URL (direct) or a `redis+sentinel://` one."""
        if not url:
            raise ValueError("no Redis URL")
        if not url.startswith(f"{SENTINEL_SCHEME}://"):
            return cls(url=url)
        parts = urlsplit(url)
        where = parts.netloc.rpartition("@")[2]
        return cls.of_sentinels(
            sentinels=where,
            master=unquote(parts.path.strip("/")),
            password=unquote(parts.password) if parts.password else None,
        )

    @property
    def via_sentinel(self) -> bool:
        return bool(self.sentinels)

    def sentinel_kwargs(self) -> dict:
        """How to talk to the sentinels themselves (not to the master)."""
        kwargs: dict = {
            "socket_timeout": SENTINEL_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
        }
        if self.password:
            kwargs["password"] = self.password
        return kwargs

    def master_kwargs(self) -> dict:
        return {"password": self.password} if self.password else {}

    # -- what settings build from it -----------------------------------------------------

    def channel_layer_host(self) -> str | dict:
        """One entry of channels_redis' `hosts` (its create_pool reads `sentinels`,
        `master_name` and `sentinel_kwargs`; the rest goes to the connection pool)."""
        if not self.via_sentinel:
            return self.url
        return {
            "sentinels": list(self.sentinels),
            "master_name": self.master,
            "sentinel_kwargs": self.sentinel_kwargs(),
            **self.master_kwargs(),
        }

    def cache(self, *, key_prefix: str) -> dict:
        """A CACHES entry for Django's RedisCache; through Sentinel with the pool class
        below (Django's `pool_class` option), LOCATION a list so Django does not split
        the URL's commas into several servers."""
        cache = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": self.url,
            "KEY_PREFIX": key_prefix,
        }
        if self.via_sentinel:
            cache["LOCATION"] = [self.url]
            cache["OPTIONS"] = {"pool_class": f"{__name__}.SentinelMasterPool"}
        return cache

    def celery_broker(self) -> tuple[str, dict]:
        """Kombu's broker URL and the transport options it needs besides (master_name,
        the sentinels' password); `sentinel://h1:p1;sentinel://h2:p2` is kombu's form."""
        if not self.via_sentinel:
            return self.url, {}
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        url = ";".join(
            f"sentinel://{auth}{f'[{h}]' if ':' in h else h}:{p}" for h, p in self.sentinels
        )
        return url, {"master_name": self.master, "sentinel_kwargs": self.sentinel_kwargs()}

    # -- clients ------------------------------------------------------------------------

    def client(self, **options) -> redis.Redis:
        if not self.via_sentinel:
            return redis.Redis.from_url(self.url, **options)
        sentinel = redis.sentinel.Sentinel(
            self.sentinels, sentinel_kwargs=self.sentinel_kwargs(), **self.master_kwargs()
        )
        return sentinel.master_for(self.master, **options)

    def async_client(self, **options) -> redis_asyncio.Redis:
        if not self.via_sentinel:
            return redis_asyncio.Redis.from_url(self.url, **options)
        sentinel = redis_asyncio.Sentinel(
            self.sentinels, sentinel_kwargs=self.sentinel_kwargs(), **self.master_kwargs()
        )
        return sentinel.master_for(self.master, **options)


class SentinelMasterPool(redis.sentinel.SentinelConnectionPool):
    """Connections to the current master named by a `redis+sentinel://` URL: the
    `pool_class` of Django's RedisCache, which calls `from_url(LOCATION, **OPTIONS)`."""

    @classmethod
    def from_url(cls, url: str, **kwargs) -> SentinelMasterPool:
        target = RedisTarget.parse(url)
        if not target.via_sentinel:
            raise ValueError(f"SentinelMasterPool needs a {SENTINEL_SCHEME}:// URL")
        sentinel = redis.sentinel.Sentinel(
            target.sentinels, sentinel_kwargs=target.sentinel_kwargs()
        )
        return cls(target.master, sentinel, **target.master_kwargs(), **kwargs)


def redis_target() -> RedisTarget:
    """The deployment's Redis, from settings.REDIS_URL."""
    return RedisTarget.parse(settings.REDIS_URL)


def redis_client(**options) -> redis.Redis:
    """A new synchronous client with a pool of its own (keep it: it is thread safe);
    `options` are redis-py's connection options (socket_timeout, ...)."""
    return redis_target().client(**options)


def redis_async_client(**options) -> redis_asyncio.Redis:
    """A new asynchronous client; its connections belong to the running event loop."""
    return redis_target().async_client(**options)


def redis_pool(**options) -> redis.ConnectionPool:
    """A synchronous connection pool (for libraries that take one, like `limits`)."""
    return redis_client(**options).connection_pool


def redis_async_pool(**options) -> redis_asyncio.ConnectionPool:
    """An asynchronous connection pool of the running event loop."""
    return redis_async_client(**options).connection_pool


def redis_client_close(client: redis.Redis) -> None:
    """Close a client of `redis_client()` with its pool and, through Sentinel, its
    connections to the sentinels (a short-lived client must not leave them open)."""
    client.close()
    client.connection_pool.disconnect()
    for sentinel in _sentinels_of(client):
        sentinel.close()


async def redis_async_client_close(client: redis_asyncio.Redis) -> None:
    """`redis_client_close` for a client of `redis_async_client()`."""
    await client.aclose(close_connection_pool=True)
    for sentinel in _sentinels_of(client):
        await sentinel.aclose()


def _sentinels_of(client) -> list:
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    return list(manager.sentinels) if manager is not None else []
