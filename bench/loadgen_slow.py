"""The slow readers of bench/slow_readers.py (`python -m bench.loadgen --slow`): clients
that subscribe, then stop reading, and come back when the server cuts them off."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import time
from urllib.parse import urlsplit

from bench.loadgen_clients import Client
from bench.loadgen_group import LoadGen

# A slow reader's receive buffer: the kernel raises it to its minimum (a few KB), so the
# server's bytes stop flowing almost at once when the client does not read.
SLOW_RCVBUF = 4096
# How often a slow reader checks whether it was cut off, and the range of its delay
# before coming back (the browser client's first backoff is a draw up to 0.5 s, after
# the server's 1 s close grace).
SLOW_CHECK_S = 1.0
SLOW_RETURN_S = (0.5, 1.5)
TCP_ESTABLISHED = 1  # tcpi_state of struct tcp_info (linux/tcp_states.h)


class SlowClient(Client):
    """A client that stops reading once subscribed (`--slow`)."""

    __slots__ = ("arrive_after_s", "subscribed_at")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.arrive_after_s = 0.0  # the first connection only (`--slow-stagger`)

    async def arrive(self) -> None:
        await asyncio.sleep(self.arrive_after_s)

    async def open(self, url: str, *, compression: str | None, attempts: int = 3) -> bool:
        ok = await super().open(url, compression=compression, attempts=attempts)
        self.subscribed_at = time.monotonic()
        return ok

    async def connect_options(self, url: str) -> dict:
        # max_queue=1: the library stops reading the socket as soon as one frame waits.
        return {"sock": await _small_receive_socket(url), "max_queue": 1}

    def established(self) -> bool:
        """Whether the kernel still holds the connection as established (a client that
        does not read learns of the server's reset only this way)."""
        sock = self.ws.transport.get_extra_info("socket") if self.ws is not None else None
        if sock is None:
            return False
        try:
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == TCP_ESTABLISHED
        except OSError:
            return False


class SlowLoadGen(LoadGen):
    """`--slow`: clients that subscribe, then read nothing (and, with `--slow-return`,
    come back when the server cuts them off)."""

    client_class = SlowClient
    reads = False

    def __init__(self, args: argparse.Namespace, plan: list[list[str]]):
        super().__init__(args, plan)
        self.cut = self.returned = 0
        self.cut_after_s: list[float] = []
        self.cut_clients: set[int] = set()
        self.watcher: asyncio.Task | None = None
        self.returning: set[asyncio.Task] = set()
        self.rng = random.Random(os.getpid())

    async def open_all(self) -> dict:
        if self.args.slow_stagger:
            # Each arrives at its own moment, so later their stalls, cut-offs and
            # returns fall at any time rather than all in the same second.
            for client in self.clients:
                client.arrive_after_s = self.rng.uniform(0, self.args.slow_stagger)
        ready = await super().open_all()
        self.watcher = asyncio.create_task(self._watch())
        return ready

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(SLOW_CHECK_S)
            for client in self.clients:
                ws = client.ws
                if ws is None:
                    continue
                if client.established():
                    # The server answers with a pong; a server that cut the client off has
                    # no connection left and answers with the reset the client missed.
                    with contextlib.suppress(Exception):
                        await ws.ping()
                    continue
                self.cut += 1
                self.cut_after_s.append(round(time.monotonic() - client.subscribed_at, 1))
                self.cut_clients.add(client.index)
                ws.transport.abort()
                client.ws = None
                if self.args.slow_return:
                    task = asyncio.create_task(self._return(client))
                    self.returning.add(task)
                    task.add_done_callback(self.returning.discard)

    async def _return(self, client: SlowClient) -> None:
        await asyncio.sleep(self.rng.uniform(*SLOW_RETURN_S))
        if self.args.slow_fresh:
            client.streams = {}  # subscribe from now: no cursors, no catch-up
        if await client.open(self.args.url, compression=self.args.compression):
            self.returned += 1

    def state(self) -> dict:
        opened = [c for c in self.clients if c.ws is not None]
        return {
            "clients": len(self.clients),
            "open": sum(1 for c in opened if c.established()),
            "cut": self.cut,
            "clients_cut": len(self.cut_clients),
            "returned": self.returned,
            "cut_after_s": self.cut_after_s,
        }

    async def close_all(self) -> None:
        for task in (self.watcher, *self.returning):
            if task is not None:
                task.cancel()
        await super().close_all()


async def _small_receive_socket(url: str) -> socket.socket:
    """A socket connected to `url`'s server with the smallest receive buffer (set before
    connecting, so the window the client offers is small from the start)."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port or 80))
    except BaseException:
        sock.close()
        raise
    return sock
