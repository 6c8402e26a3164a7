"""A Redis master, its replica and three sentinels of a test's own, on loopback free ports
(the same redis-server binary, run as a sentinel with `--sentinel`), with short
down-after and failover timeouts so a failover takes seconds. Never the shared Redis."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.faults.private_servers import redis_server_binary
from tests.live.conftest import free_port, wait_for_port

MASTER_NAME = "carbon-test"
# Sentinel calls the master down after this long without an answer (its default is 30 s);
# with a quorum of 2 of 3 and an election, the replica is promoted a few seconds later.
DOWN_AFTER_MS = 1000
# How long a failover may take before sentinels try another one (default 3 minutes).
FAILOVER_TIMEOUT_MS = 3000
# Starting: how long the replica may take to sync and the sentinels to find each other
# (they say hello every 2 s) and the replica (from the master's INFO).
READY_TIMEOUT_S = 20.0


class RedisNode:
    """One redis-server process (a data node or a sentinel) in `directory`."""

    def __init__(self, directory: Path, name: str):
        self.directory = directory / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self, *args: str) -> None:
        with open(self.directory / "server.log", "a") as log:
            self.process = subprocess.Popen(
                [redis_server_binary(), *args], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(self.port, process=self.process)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def kill(self) -> None:
        """kill -9 and reap."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


class SentinelCluster:
    """Master, replica and three sentinels; `start()`, `kill_master()`, `stop()`."""

    def __init__(self, directory: Path):
        self.master = RedisNode(directory, "master")
        self.replica = RedisNode(directory, "replica")
        self.sentinels = [RedisNode(directory, f"sentinel{i}") for i in range(3)]

    @property
    def nodes(self) -> list[RedisNode]:
        return [self.master, self.replica, *self.sentinels]

    @property
    def env(self) -> dict:
        """The product's settings that point at this cluster (and not at REDIS_URL)."""
        return {
            "REDIS_URL": "",
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels),
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
        }

    def _data_args(self, node: RedisNode) -> list[str]:
        return [
            "--port", str(node.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(node.directory),
        ]  # fmt: skip

    def start(self) -> None:
        self.master.start(*self._data_args(self.master))
        self.replica.start(
            *self._data_args(self.replica), "--replicaof", "127.0.0.1", str(self.master.port)
        )
        self._wait(self._replica_synced, "the replica to sync")
        for sentinel in self.sentinels:
            config = sentinel.directory / "sentinel.conf"
            # Sentinel rewrites its configuration file: one of its own, writable.
            config.write_text(
                f"port {sentinel.port}\n"
                "bind 127.0.0.1\n"
                f"dir {sentinel.directory}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            sentinel.start(str(config), "--sentinel")
        self._wait(self._sentinels_ready, "the sentinels to know each other and the replica")

    def master_port(self, sentinel: RedisNode | None = None) -> int | None:
        """The master's port as a sentinel names it now."""
        client = (sentinel or self.sentinels[0]).client()
        try:
            address = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        finally:
            client.close()
        return int(address[1]) if address else None

    def kill_master(self) -> None:
        self.master.kill()

    def wait_for_promotion(self, timeout: float = 30.0) -> float:
        """Wait until every sentinel names the replica as master and the replica answers
        as one; returns when that was seen (monotonic)."""

        def promoted() -> bool:
            if any(self.master_port(s) != self.replica.port for s in self.sentinels):
                return False
            client = self.replica.client()
            try:
                return client.execute_command("ROLE")[0] == b"master"
            finally:
                client.close()

        self._wait(promoted, "the replica's promotion", timeout=timeout, every=0.05)
        return time.monotonic()

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def _replica_synced(self) -> bool:
        client = self.replica.client()
        try:
            return client.info("replication").get("master_link_status") == "up"
        finally:
            client.close()

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                state = client.sentinel_master(MASTER_NAME)
            finally:
                client.close()
            if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                return False
        return True

    @staticmethod
    def _wait(predicate, what: str, *, timeout: float = READY_TIMEOUT_S, every=0.1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except redis.RedisError:
                pass  # not up yet
            time.sleep(every)
        raise TimeoutError(f"waited {timeout} s for {what}")
