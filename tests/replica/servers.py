"""A real streaming replica for the read-replica tests: a private primary PostgreSQL
(tests/faults/private_servers.py) and a hot standby cloned from it with `pg_basebackup
-R`, on another loopback port, which a test may pause, stop and start again.

initdb's defaults already allow it (PostgreSQL 15: wal_level=replica, max_wal_senders=10,
and `host replication all 127.0.0.1/32 trust` in pg_hba.conf with --auth=trust).
"""

from __future__ import annotations

import time

import psycopg

from tests.faults.private_servers import PrivatePostgres


class Standby(PrivatePostgres):
    """A hot standby of `primary`, streaming from it; no initdb of its own."""

    def __init__(self, primary: PrivatePostgres):
        super().__init__(primary.bin_dir)
        self.primary = primary

    def clone(self) -> float:
        """`pg_basebackup -R` from the primary into this data directory; seconds."""
        started = time.monotonic()
        self._run(
            self.bin_dir / "pg_basebackup",
            "-D",
            self.data,
            "-h",
            "127.0.0.1",
            "-p",
            self.primary.port,
            "-U",
            "postgres",
            "-R",  # standby.signal and primary_conninfo: start as a streaming standby
            "-X",
            "stream",
            "--checkpoint=fast",  # not the spread checkpoint's minutes
            "--no-sync",
        )
        return time.monotonic() - started

    def stop_immediate(self, timeout: float = 30) -> float:
        """`pg_ctl stop -m immediate`: every process ends at once, as in a crash;
        seconds it took."""
        started = time.monotonic()
        self._remember_children()
        self._run(self.bin_dir / "pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w")
        self.process.wait(timeout=timeout)
        return time.monotonic() - started

    def sql(self, query: str):
        """One statement on the standby's `carbon` database; its first row."""
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            return conn.execute(query).fetchone()

    def head(self) -> int:
        """The change log's head as replayed here (-1 before the row exists)."""
        row = self.sql("SELECT head_seq FROM change_log_state WHERE id = 1")
        return row[0] if row else -1

    def replay_pause(self) -> None:
        self.sql("SELECT pg_wal_replay_pause()")

    def replay_resume(self) -> None:
        self.sql("SELECT pg_wal_replay_resume()")

    def wait_for_head(self, seq: int, timeout: float = 15) -> float:
        """Until the replayed head is at least `seq`; seconds it took."""
        started = time.monotonic()
        while self.head() < seq:
            assert time.monotonic() - started < timeout, f"replica head below {seq}"
            time.sleep(0.01)
        return time.monotonic() - started
