"""The two baseline servers of bench/baselines.py, each a process of its own.

Neither touches the database or the product's code; both take pre-encoded frames from
Redis on loopback and hand each one, unchanged, to every connection.

- `channels`: a plain Channels consumer per connection, served by daphne (one process).
  Each connection's `AsyncWebsocketConsumer` joins one group on
  `channels_redis.pubsub.RedisPubSubChannelLayer` (`group_add` before it accepts); the
  publisher calls `group_send` with `{"type": "bench.frame", "text": <frame>}` and every
  consumer sends the text on. That is one channel-layer message per delivery, as in a
  naive per-connection design. Channels is configured here with `settings.configure`
  (no product settings): the layer, its Redis URL and a key prefix, nothing else.
- `websockets`: a bare `websockets` server (`websockets.asyncio.server`, the default
  asyncio event loop, no Django). It subscribes to one Redis pub/sub channel itself
  (`redis.asyncio`) and hands each message to every open connection with websockets'
  `broadcast()`: synchronous writes into each connection's buffer, no per-connection
  await and no backpressure (a slow connection piles up in its buffer; nothing is
  skipped).

Both serve WebSocket at any path on 127.0.0.1 and exit on SIGTERM:

    python -m bench.baseline_servers channels --port 8101 --redis-url redis://... \\
        --prefix h3bench-1234
    python -m bench.baseline_servers websockets --port 8102 --redis-url redis://... \\
        --prefix h3bench-1234

The group (channels) and the pub/sub channel (websockets) are named by `group_name()`
and `pubsub_channel()` below, so the publisher in bench/baselines.py finds them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

GROUP = "bench"
FRAME_TYPE = "bench.frame"


def group_name() -> str:
    """The Channels group every plain consumer joins (the layer adds the prefix)."""
    return GROUP


def pubsub_channel(prefix: str) -> str:
    """The Redis pub/sub channel the bare websockets server listens on."""
    return f"{prefix}:frames"


def channel_layers(redis_url: str, prefix: str) -> dict:
    """CHANNEL_LAYERS for the plain consumer: the product's layer, a prefix of its own."""
    return {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": prefix},
        }
    }


# -- (a) a plain Channels consumer per connection, under daphne -------------------------------


def channels_application(redis_url: str, prefix: str):
    """The ASGI app: every WebSocket connection gets its own PlainConsumer.

    Django is configured here, on first use, so importing this module configures
    nothing (the scenario and the tests import it)."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            INSTALLED_APPS=["channels"],
            CHANNEL_LAYERS=channel_layers(redis_url, prefix),
            LOGGING_CONFIG=None,
        )
        django.setup()
    from channels.generic.websocket import AsyncWebsocketConsumer

    class PlainConsumer(AsyncWebsocketConsumer):
        async def connect(self) -> None:
            await self.channel_layer.group_add(GROUP, self.channel_name)
            await self.accept()

        async def disconnect(self, code) -> None:
            await self.channel_layer.group_discard(GROUP, self.channel_name)

        async def bench_frame(self, event: dict) -> None:
            await self.send(text_data=event["text"])

    return PlainConsumer.as_asgi()


def serve_channels(port: int, redis_url: str, prefix: str) -> None:
    # Importing daphne.server installs Twisted's asyncio reactor, as `python -m daphne`
    # does; its other settings are daphne's defaults (pings every 20 s).
    from daphne.server import Server

    application = channels_application(redis_url, prefix)
    Server(
        application=application,
        endpoints=[f"tcp:port={port}:interface=127.0.0.1"],
        verbosity=0,
    ).run()


# -- (b) a bare websockets broadcast ---------------------------------------------------------


async def serve_websockets(port: int, redis_url: str, prefix: str) -> None:
    import redis.asyncio as redis
    from websockets.asyncio.server import broadcast, serve

    connections: set = set()

    async def handler(websocket) -> None:
        connections.add(websocket)
        try:
            await websocket.wait_closed()
        finally:
            connections.discard(websocket)

    async def relay(client: redis.Redis) -> None:
        async with client.pubsub() as pubsub:
            await pubsub.subscribe(pubsub_channel(prefix))
            async for message in pubsub.listen():
                if message["type"] == "message":
                    # A str goes out as a text frame, like the consumer's `text_data`.
                    broadcast(connections, message["data"].decode())

    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    client = redis.Redis.from_url(redis_url)
    async with serve(handler, "127.0.0.1", port, max_size=2**16):
        relaying = asyncio.create_task(relay(client))
        await stop
        relaying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relaying
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("server", choices=["channels", "websockets"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True, help="Redis names of this run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.server == "channels":
        serve_channels(args.port, args.redis_url, args.prefix)
    else:
        asyncio.run(serve_websockets(args.port, args.redis_url, args.prefix))


if __name__ == "__main__":
    main()
