"""The processes of the baseline comparison (bench/baselines.py): a baseline server, the
client processes holding the connections, and the publisher sending the frames."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake

from bench.baseline_clients import BUCKET_US, frame
from bench.baseline_servers import FRAME_TYPE, group_name, pubsub_channel
from bench.common import REPO
from bench.harness.cell import hist_percentile
from bench.harness.fleet import answers_summed
from bench.harness.processes import child_preexec, free_port, proc_rss_kb

SERVER_START_S = 30.0
ANSWER_S = 60.0  # a client process's answer to one command
ANSWER_BYTES = 2**24  # its longest line (a report with its latency histogram)


class Server:
    """One baseline server process."""

    def __init__(self, kind: str, redis_url: str, prefix: str):
        self.kind = kind
        self.redis_url = redis_url
        self.prefix = prefix
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    async def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "bench.baseline_servers",
            self.kind,
            "--port",
            str(self.port),
            "--redis-url",
            self.redis_url,
            "--prefix",
            self.prefix,
        ]
        self.process = subprocess.Popen(command, cwd=REPO, preexec_fn=child_preexec)
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited with {self.process.returncode}")
            # A whole handshake, not a bare TCP probe (which the servers log as an error).
            with contextlib.suppress(OSError, InvalidHandshake, TimeoutError):
                async with connect(f"ws://127.0.0.1:{self.port}/ws", open_timeout=5):
                    return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.kind} server did not listen on {self.port}")

    def rss_kb(self) -> int:
        return proc_rss_kb(self.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


class ClientProcess:
    """One bench.baseline_clients process, driven over its stdin."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process

    @classmethod
    async def start(cls, port: int, deadline: float, loop: str) -> ClientProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.baseline_clients",
            "--port",
            str(port),
            "--deadline",
            str(deadline),
            "--loop",
            loop,
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=ANSWER_BYTES,
            preexec_fn=child_preexec,  # open files for its sockets; dies with us
        )
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def ask(self, command: str, timeout: float = ANSWER_S) -> dict:
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"client process {self.pid} exited")
        return json.loads(line)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.ask("close", timeout=10)
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


class Fleet:
    """The client processes, each holding its share of the connections."""

    def __init__(self, processes: list[ClientProcess]):
        self.processes = processes

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    async def ask_all(self, commands: list[str], timeout: float = ANSWER_S) -> list[dict]:
        return await asyncio.gather(
            *(p.ask(c, timeout) for p, c in zip(self.processes, commands, strict=True))
        )

    async def open(self, clients: int) -> dict:
        count = len(self.processes)
        shares = [clients // count + (i < clients % count) for i in range(count)]
        answers = await self.ask_all([f"open {n}" for n in shares], timeout=120)
        return {
            "open": sum(a["open"] for a in answers),
            "failed": sum(a["failed"] for a in answers),
            "errors": [e for a in answers for e in a["errors"]][:5],
            "seconds": max(a["seconds"] for a in answers),
        }

    async def window(self, lo: int, hi: int) -> None:
        await self.ask_all([f"window {lo} {hi}"] * len(self.processes))

    async def wait(self, timeout: float) -> dict:
        answers = await self.ask_all([f"wait {timeout}"] * len(self.processes), timeout + 60)
        hist: dict[int, int] = {}
        for answer in answers:
            for bucket, count in answer["hist"].items():
                hist[int(bucket)] = hist.get(int(bucket), 0) + count
        lags = [a["loop_lag_ms"] for a in answers if a["loop_lag_ms"]["p99"] is not None]
        maxima = [a["max_ms"] for a in answers if a["max_ms"] is not None]
        counts = ("connections", "closed", "complete", "missing", "out_of_order")
        return {
            **answers_summed(answers, counts),
            "delivered": sum(hist.values()),
            "p50_ms": hist_percentile(hist, 0.50, BUCKET_US),
            "p99_ms": hist_percentile(hist, 0.99, BUCKET_US),
            "max_ms": max(maxima, default=None),
            "client_loop_lag_ms": {
                "p99": max((lag["p99"] for lag in lags), default=None),
                "max": max((lag["max"] for lag in lags), default=None),
            },
            "waited_s": max(a["waited_s"] for a in answers),
        }

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.processes), return_exceptions=True)


# -- the publisher ---------------------------------------------------------------------------


class Publisher:
    """Sends frame `seq` the way the server under test takes it."""

    def __init__(self, kind: str, redis_url: str, prefix: str):
        self.kind = kind
        if kind == "channels":
            from channels_redis.pubsub import RedisPubSubChannelLayer

            self.layer = RedisPubSubChannelLayer(hosts=[redis_url], prefix=prefix)
        else:
            import redis.asyncio as redis

            self.redis = redis.Redis.from_url(redis_url)
            self.channel = pubsub_channel(prefix)

    async def send(self, seq: int) -> None:
        # Stamped as late as possible: the latency includes the publish itself.
        if self.kind == "channels":
            text = frame(seq, time.time_ns())
            await self.layer.group_send(group_name(), {"type": FRAME_TYPE, "text": text})
        else:
            await self.redis.publish(self.channel, frame(seq, time.time_ns()))

    async def run(self, first: int, count: int, rate: float, start: float, origin: int) -> dict:
        """Frames first..first+count-1 at `rate`, frame `origin` due at `start` (so the
        warm-up and the measured window of a step keep one schedule)."""
        late_max = 0.0
        for seq in range(first, first + count):
            delay = start + (seq - origin) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late_max = max(late_max, -delay)
            await self.send(seq)
        return {"late_max_ms": round(late_max * 1000, 1)}

    async def close(self) -> None:
        if self.kind == "channels":
            await self.layer.flush()
        else:
            await self.redis.aclose()
