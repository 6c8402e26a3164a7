"""Kombu's Redis transports (plain and Sentinel), with one fault of theirs mended: a
worker that loses its broker must reconnect, not die.

When the connection breaks, Celery's consumer closes it and, closing the channel, kombu
tries to put the messages the worker holds back on their queue (`restore_unacked`): ETA
tasks, such as the debounced benchmark recompute, sit in the worker unacknowledged for
seconds. By then the channel's transport has no client, and building the connection
pool for that restore fails with `AttributeError: 'NoneType' object has no attribute
'hostname'`, which Celery's `ignore_errors` does not ignore: "Unrecoverable error", and
the worker exits (seen with a Redis master killed under Sentinel, tests/sentinel/;
celery/kombu#582 and #970 are the same fault). Here that pool raises a connection error
instead, which Celery ignores before it reconnects; the messages it could not restore
come back from the broker's unacked set after the visibility timeout when the broker
kept that set, as for a worker killed outright.

`CELERY_BROKER_TRANSPORT` names these classes (config/settings/__init__.py) for the
`redis://`, `rediss://` and `sentinel://` brokers.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class _RestoreSafeChannel:
    """Mixin for kombu's Redis channels: no pool without a connection."""

    def _connparams(self, asynchronous: bool = False) -> dict:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous)


class RedisChannel(_RestoreSafeChannel, kombu_redis.Channel):
    pass


class RedisTransport(kombu_redis.Transport):
    Channel = RedisChannel


class SentinelChannel(_RestoreSafeChannel, kombu_redis.SentinelChannel):
    pass


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


def broker_transport(broker_url: str) -> str | None:
    """The transport class for `broker_url`: these for Redis and Sentinel, else None
    (kombu's own choice by the URL's scheme)."""
    scheme = broker_url.partition("://")[0]
    if scheme in ("redis", "rediss"):
        return "config.celery_broker:RedisTransport"
    if scheme == "sentinel":
        return "config.celery_broker:SentinelTransport"
    return None
