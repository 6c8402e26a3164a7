"""The bench harness every scenario shares: the stack's processes and what /proc says of
them, the load generators, the stamped writer and its workload, one measured cell and
the merging of the load generators' reports. Each scenario file (bench/latency.py,
bench/fanout.py, ...) holds only its scenario; tests/live/ starts its stacks with the
same Procfile reading and ports."""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import queue
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg

from bench.common import REPO

# The product's server (config/serve.py) first, then daphne for the comparison.
SERVERS = ("uvicorn", "daphne")
PRODUCT_SERVER = "uvicorn"
CLIENTS_PER_LOADGEN = 1250
PR_SET_PDEATHSIG = 1

MINOR_SQL = (
    "UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1,"
    " source = %s || CASE WHEN source LIKE '%%:up' THEN ':up' ELSE '' END WHERE id = %s"
)
# Up by 12% of the total, then back down by the same amount (10.7% of the raised total):
# both are `major` (>= 10%), and a record never drifts far however often it is picked.
MAJOR_SQL = (
    "UPDATE emission_records SET scope1_tonnes = CASE WHEN source LIKE '%%:up'"
    " THEN GREATEST(scope1_tonnes - total_tonnes * 0.12 / 1.12, 0)"
    " ELSE scope1_tonnes + total_tonnes * 0.12 END,"
    " source = %s || CASE WHEN source LIKE '%%:up' THEN ':down' ELSE ':up' END WHERE id = %s"
)
# Records the writer may touch: public companies, visible records, totals far below the
# year's top 10 (entering it would be a different kind of significant change).
POOL_SQL = """
SELECT e.id::text, e.company_id::text, i.slug
  FROM emission_records e
  JOIN companies c ON c.id = e.company_id
  JOIN industries i ON i.id = c.industry_id
 WHERE c.is_public AND e.verification_status <> 'rejected' AND e.year = %s
   AND e.total_tonnes BETWEEN 10000 AND 300000
 ORDER BY md5(e.id::text || %s)
"""
POOL_YEAR = 2024


# -- processes and /proc ---------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on now, on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def procfile_entries() -> dict[str, str]:
    """The Procfile's command lines, by process name (what `make run` starts)."""
    entries = {}
    for line in (REPO / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and not line.startswith("#"):
            entries[name.strip()] = command.strip()
    return entries


def child_preexec() -> None:
    """In a child before exec: as many open files as allowed, and a SIGTERM when the
    scenario process dies (killed by a timeout), so no server outlives it."""
    nofile_preexec()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def nofile_preexec() -> None:
    """As many open files as allowed (65536 if we may)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, 65536), max(hard, 65536)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def proc_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]
    return (sum(values) - idle) / ticks, sum(values) / ticks


def pids_named(name: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/comm") as comm:
                if comm.read().strip() == name:
                    out.append(int(entry))
    return out


class CpuMeter:
    """CPU used by named processes over a window, in cores (1.0 = one core busy)."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = groups

    def snapshot(self) -> dict:
        groups = {**self.groups, "postgres": pids_named("postgres")}
        return {
            "at": time.monotonic(),
            "machine": machine_cpu()[0],
            "groups": {
                name: {pid: proc_cpu_s(pid) for pid in pids} for name, pids in groups.items()
            },
        }

    @staticmethod
    def cores(first: dict, last: dict) -> dict:
        seconds = max(last["at"] - first["at"], 1e-6)
        out = {"machine": round((last["machine"] - first["machine"]) / seconds, 2)}
        for name, pids in last["groups"].items():
            before = first["groups"].get(name, {})
            used = [cpu - before.get(pid, 0.0) for pid, cpu in pids.items()]
            # Backends that ended during the window are missing: postgres is a lower bound.
            out[name] = round(sum(used) / seconds, 2)
            if name == "loadgens":
                out["loadgen_max"] = round(max(used, default=0.0) / seconds, 2)
        # Whatever else ran on the machine meanwhile (other benchmarks, the system).
        out["others"] = round(
            out["machine"] - sum(v for k, v in out.items() if k not in ("machine", "loadgen_max")),
            2,
        )
        return out


def redis_prefix_clear(prefix: str) -> int:
    """Remove what one run left in Redis under its prefix (queued Celery tasks, cache)."""
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()
    return len(keys)


# Tables a run churns: connection rows (written on every connect and refreshed every
# 15 s), the writer's rows, the log and the publisher's state.
CHURNED_TABLES = (
    "active_connections",
    "context_heads",
    "aggregate_totals",
    "change_log_state",
    "emission_records",
    "companies",
    "data_changes",
)


def vacuum_churned(database_url: str) -> None:
    """VACUUM what earlier runs churned, so each run starts alike even where autovacuum
    is off (it is on this machine's server): a bloated active_connections alone made
    5,000 connects take twice as long."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in CHURNED_TABLES:
            conn.execute(f"VACUUM (ANALYZE) {table}")


def active_connections_tidy(database_url: str) -> None:
    """Rows of server processes on this host that no longer exist (killed bench runs)."""
    host = socket.gethostname()
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT DISTINCT server FROM active_connections WHERE server LIKE %s", [f"{host}:%"]
        ).fetchall()
        dead = [s for (s,) in rows if not Path(f"/proc/{s.rpartition(':')[2]}").exists()]
        if dead:
            conn.execute("DELETE FROM active_connections WHERE server = ANY(%s)", [dead])


# -- the stack -----------------------------------------------------------------------------


# With --gc-trace the web server starts through this: every collection of the oldest
# generation, and any other over 5 ms, is logged (time, generation, ms, objects collected).
GC_TRACE_BOOT = """
import gc, os, runpy, sys, time
log = open(os.environ["BENCH_GC_TRACE"], "w", buffering=1)
began = [0.0]
def traced(phase, info):
    if phase == "start":
        began[0] = time.perf_counter()
        return
    took = (time.perf_counter() - began[0]) * 1000
    if info["generation"] == 2 or took > 5:
        log.write(f"{time.time():.3f} {info['generation']} {took:.1f} {info['collected']}\\n")
gc.callbacks.append(traced)
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def web_command(server: str, port: int, gc_trace: bool = False) -> list[str]:
    if gc_trace:
        command = web_command(server, port)
        return [sys.executable, "-c", GC_TRACE_BOOT, *command[2:]]
    if server == "daphne":
        # As in the Procfile, on loopback.
        return [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "config.asgi:application",
        ]
    if server == "uvicorn":
        # The product's web server (config/serve.py), as the Procfile starts it.
        return [sys.executable, "-m", "config.serve", "--host", "127.0.0.1", "--port", str(port)]
    raise ValueError(server)


def stop_on_sigterm() -> None:
    """SIGTERM ends the scenario through its `finally` blocks (servers and load
    generators stopped), like Ctrl-C."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def uvicorn_missing() -> bool:
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        return True
    return False


class Stack:
    """One web server process and one publisher against the bench database."""

    def __init__(
        self,
        server: str,
        database_url: str,
        logdir: Path,
        gc_trace: bool = False,
        env: dict[str, str] | None = None,
    ):
        self.server = server
        self.extra_env = env or {}
        self.gc_trace = logdir / f"gc-{server}-{os.getpid()}.txt" if gc_trace else None
        self.database_url = database_url
        self.logdir = logdir
        self.port = free_port()
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: list = []

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/dashboard/updates"

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def environment(self) -> dict[str, str]:
        """The environment every process of the stack starts with."""
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_PREFIX": self.prefix,
            "REALTIME_MAX_CONNECTIONS_PER_ADDRESS": "100000",
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            "WEB_ACCESS_LOG": "0",
            "DEBUG": "0",
            **self.extra_env,
        }
        if self.gc_trace:
            env["BENCH_GC_TRACE"] = str(self.gc_trace)
        return env

    def commands(self) -> dict[str, list[str]]:
        """The stack's processes by name; `web` is the one answering on `port`."""
        return {
            "web": web_command(self.server, self.port, gc_trace=self.gc_trace is not None),
            "publisher": [sys.executable, "manage.py", "run_publisher"],
        }

    def start(self) -> Stack:
        env = self.environment()
        for name, command in self.commands().items():
            log = open(self.logdir / f"{self.server}-{name}-{self.port}.log", "w")  # noqa: SIM115
            self.logs.append(log)
            self.processes[name] = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=child_preexec,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{name} exited; see {self.logdir}")
            with contextlib.suppress(OSError):
                self.status()
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"{self.server} did not answer on {self.port}")

    def status(self) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/updates/status"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())

    def status_or_none(self, timeout: float = 10) -> dict | None:
        """The status, or None when the server did not answer in time (overloaded)."""
        try:
            url = f"http://127.0.0.1:{self.port}/api/updates/status"
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    def publisher_idle(self, timeout: float = 60) -> bool:
        """Wait until nothing waits to be published (read from the database directly, so
        an overloaded web server does not stall the wait)."""
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                pending = conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM data_changes WHERE processed_at IS NULL)"
                ).fetchone()[0]
                if not pending:
                    return True
                time.sleep(0.05)
        return False

    def rss_kb(self) -> int:
        return proc_rss_kb(self.pid("web"))

    def gc_pauses(self, from_s: float, to_s: float) -> dict | None:
        """Collections the web server logged in a window (with --gc-trace)."""
        if self.gc_trace is None or not self.gc_trace.exists():
            return None
        full, slow = [], []
        for line in self.gc_trace.read_text().splitlines():
            at, generation, took, _ = line.split()
            if from_s <= float(at) <= to_s:
                (full if generation == "2" else slow).append(float(took))
        return {
            "full_collections": len(full),
            "full_max_ms": max(full, default=0.0),
            "full_total_ms": round(sum(full), 1),
            "younger_over_5ms": len(slow),
        }

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for log in self.logs:
            log.close()
        with contextlib.suppress(Exception):
            redis_prefix_clear(self.prefix)


# -- the load generators ------------------------------------------------------------------------


class Fleet:
    """Load generator processes (bench.loadgen --control); clients are added in groups,
    each group shared out over new processes."""

    module = "bench.loadgen"
    name = "loadgen"

    def __init__(self, url: str, database_url: str, workdir: Path, timeout: float):
        self.url = url
        self.database_url = database_url
        self.workdir = workdir
        self.timeout = timeout
        self.processes: list[subprocess.Popen] = []
        self.lines: list[queue.Queue] = []
        self.clients = 0

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def loadgen_args(self, index: int) -> list[str]:
        """Arguments of the index-th load generator beyond the common ones."""
        return []

    def add(self, plan: list[list[str]], processes: int, ready_timeout: float) -> dict:
        """Connect `plan`'s clients in `processes` new load generators; READY figures."""
        first = len(self.processes)
        for part in (plan[i::processes] for i in range(processes)):
            index = len(self.processes)
            path = self.workdir / f"plan-{os.getpid()}-{self.name}-{index}.json"
            path.write_text(json.dumps(part))
            command = [
                sys.executable,
                "-m",
                self.module,
                "--url",
                self.url,
                "--plan",
                str(path),
                "--database-url",
                self.database_url,
                "--control",
                "--timeout",
                str(self.timeout),
                *self.loadgen_args(index),
            ]
            process = subprocess.Popen(
                command,
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=open(self.workdir / f"{self.name}-{index}.log", "a"),  # noqa: SIM115
                text=True,
                bufsize=1,
                preexec_fn=child_preexec,
            )
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
            self.processes.append(process)
            self.lines.append(lines)
        ready = self._collect("READY", ready_timeout, start=first)
        self.clients += len(plan)
        return {
            "clients": sum(r["clients"] for r in ready),
            "connected": sum(r["connected"] for r in ready),
            "failed": sum(r["failed"] for r in ready),
            "rejected_contexts": sum(r["rejected_contexts"] for r in ready),
            "connect_s": max(r["connect_s"] for r in ready),
        }

    def _collect(self, tag: str, timeout: float, start: int = 0) -> list[dict]:
        deadline = time.monotonic() + timeout
        out = []
        for process, lines in zip(self.processes[start:], self.lines[start:], strict=True):
            while True:
                left = deadline - time.monotonic()
                try:
                    line = lines.get(timeout=max(left, 0.01))
                except queue.Empty as exc:
                    raise TimeoutError(f"loadgen {process.pid}: no {tag} in {timeout} s") from exc
                if line is None:
                    raise RuntimeError(f"loadgen {process.pid} exited (see {self.workdir})")
                if line.startswith(tag + " "):
                    out.append(json.loads(line[len(tag) + 1 :]))
                    break
        return out

    def _send(self, line: str) -> None:
        for process in self.processes:
            process.stdin.write(line + "\n")
            process.stdin.flush()

    def drain(self, timeout: float, seq: int | None = None) -> dict:
        """Wait until every client's cursors reached their contexts' heads (or, with
        `seq`, each context's last change at or below it: the writer may go on)."""
        self._send(f"drain {timeout}" + (f" {seq}" if seq is not None else ""))
        answers = self._collect("DRAINED", timeout + 30)
        return {"s": max(a["s"] for a in answers), "behind": sum(a["behind"] for a in answers)}

    def report(self, window: dict, timeout: float = 120) -> list[dict]:
        self._send("report " + json.dumps(window))
        return self._collect("REPORT", timeout)

    def churn(self, share: float, seed: int, timeout: float = 120) -> dict:
        """Every load generator aborts `share` of its open clients (no close frame) and
        reconnects them, resuming from their cursors; the summed CHURNED figures."""
        self._send("churn " + json.dumps({"share": share, "seed": seed}))
        answers = self._collect("CHURNED", timeout)
        summed = {key: sum(a[key] for a in answers) for key in ("aborted", "reconnected", "failed")}
        return {**summed, "s": max(a["s"] for a in answers)}

    def state(self, timeout: float = 30) -> list[dict]:
        """Every load generator's answer to `state`."""
        self._send("state")
        return self._collect("STATE", timeout)

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.stdin.write("stop\n")
                process.stdin.close()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def loadgens_for(clients: int) -> int:
    return max(2, math.ceil(clients / CLIENTS_PER_LOADGEN))


def loadgens_more(clients: int) -> int:
    return max(1, math.ceil(clients / CLIENTS_PER_LOADGEN))


# -- reports ------------------------------------------------------------------------------------


def hist_percentile(hist: dict[int, int], q: float, bucket_us: int) -> float | None:
    """The q-quantile (0..1) of a 100 us histogram, in ms (bucket middle)."""
    total = sum(hist.values())
    if not total:
        return None
    rank = q * (total - 1)
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen > rank:
            return (bucket + 0.5) * bucket_us / 1000
    return (max(hist) + 0.5) * bucket_us / 1000


def reports_merge(reports: list[dict]) -> dict:
    """One figure set from the load generators' reports of one window."""
    hist: dict[int, int] = {}
    bucket_us = reports[0]["latency"]["bucket_us"]
    per_change: dict[int, list[int]] = {}
    for report in reports:
        for bucket, count in report["latency"]["hist"].items():
            hist[int(bucket)] = hist.get(int(bucket), 0) + count
        for stamp, values in report.get("per_change", {}).items():
            per_change.setdefault(int(stamp), []).extend(values)
    count = sum(r["latency"]["count"] for r in reports)
    by_kind: dict[str, dict[int, int]] = {}
    for report in reports:
        for kind, kind_hist in report["latency"].get("by_kind", {}).items():
            into = by_kind.setdefault(kind, {})
            for bucket, n in kind_hist.items():
                into[int(bucket)] = into.get(int(bucket), 0) + n
    summed = [
        "frames_in_window",
        "items_in_window",
        "items_expected",
        "items_received",
        "coalesced",
        "lost",
        "unexpected",
        "clients_with_loss",
        "clients",
        "open",
        "closed_by_server",
        "duplicates",
        "gaps",
        "resets",
        "errors",
    ]
    out = {name: sum(r[name] for r in reports) for name in summed}
    lost_by_context: dict[str, int] = {}
    for report in reports:
        for context, lost in report["lost_by_context"].items():
            lost_by_context[context] = lost_by_context.get(context, 0) + lost
    out.update(
        {
            "stamped_items": count,
            "p50_ms": hist_percentile(hist, 0.50, bucket_us),
            "p95_ms": hist_percentile(hist, 0.95, bucket_us),
            "p99_ms": hist_percentile(hist, 0.99, bucket_us),
            "max_ms": max(r["latency"]["max_us"] for r in reports) / 1000 if count else None,
            "mean_ms": sum(r["latency"]["sum_us"] for r in reports) / count / 1000
            if count
            else None,
            "lost_by_context": dict(sorted(lost_by_context.items(), key=lambda kv: -kv[1])[:5]),
            "by_kind": {
                kind: {
                    "items": sum(h.values()),
                    "p50_ms": hist_percentile(h, 0.50, bucket_us),
                    "p99_ms": hist_percentile(h, 0.99, bucket_us),
                }
                for kind, h in sorted(by_kind.items())
            },
            "loadgen_loop_lag_ms": {
                key: max((r["loop_lag_ms"][key] or 0) for r in reports)
                for key in ("p50", "p99", "max")
            },
        }
    )
    if per_change:
        out["per_change"] = per_change
    return out


# -- the writer -----------------------------------------------------------------------------


class Writer:
    """Single-row UPDATEs at a fixed rate on its own connection, each stamped."""

    def __init__(self, database_url: str):
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.last_stamp_ns = 0

    def change(self, record_id: str, major: bool) -> tuple[int, int]:
        """One autocommitted update; returns (stamp, ns the statement and commit took)."""
        stamp = time.time_ns()
        self.conn.execute(MAJOR_SQL if major else MINOR_SQL, [f"bench:{stamp}", record_id])
        self.last_stamp_ns = stamp
        return stamp, time.time_ns() - stamp

    def run(self, rate: float, seconds: float, pick, stats: dict) -> None:
        """`rate` changes/s for `seconds` on an absolute schedule (late ones go at once)."""
        count = max(1, int(rate * seconds))
        durations = []
        late_max = 0.0
        started = time.monotonic()
        for i in range(count):
            due = started + i / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                late_max = max(late_max, -wait)
            durations.append(self.change(*pick())[1])
        elapsed = time.monotonic() - started
        durations.sort()
        stats.update(
            changes=count,
            achieved_rate=round(count / elapsed, 1),
            late_max_ms=round(late_max * 1000, 1),
            statement_p50_ms=round(durations[len(durations) // 2] / 1e6, 2),
            statement_p99_ms=round(durations[int(len(durations) * 0.99)] / 1e6, 2),
        )

    def head_seq(self) -> int:
        return self.conn.execute("SELECT head_seq FROM change_log_state").fetchone()[0]

    def close(self) -> None:
        self.conn.close()


STAGES_SQL = """
WITH s AS (
  SELECT split_part(change_data->'new'->>'source', ':', 2)::numeric / 1e6 AS stamp_ms,
         extract(epoch FROM created_at) * 1000 AS captured_ms,
         extract(epoch FROM processed_at) * 1000 AS published_ms
    FROM data_changes
   WHERE seq > %s AND seq <= %s AND entity = 'emission_record'
     AND change_data->'new'->>'source' LIKE 'bench:%%'
)
SELECT count(*),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY captured_ms - stamp_ms),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY published_ms - stamp_ms)
  FROM s
"""


def stages(database_url: str, seq_lo: int, seq_hi: int) -> dict:
    """Where a change's time goes before the fan-out, from the log: stamp to capture (the
    trigger's clock_timestamp) and stamp to the publisher's processed_at (claimed, routed,
    about to commit)."""
    with psycopg.connect(database_url) as conn:
        count, captured, published = conn.execute(STAGES_SQL, [seq_lo, seq_hi]).fetchone()
    if not count:
        return {}
    return {
        "changes": count,
        "to_capture_p50_ms": round(float(captured[0]), 2),
        "to_capture_p99_ms": round(float(captured[1]), 2),
        "to_published_p50_ms": round(float(published[0]), 2),
        "to_published_p99_ms": round(float(published[1]), 2),
    }


def record_pool(database_url: str, seed: int) -> list[tuple[str, str, str]]:
    """(record id, company id, industry slug) of every record the writer may touch."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(POOL_SQL, [POOL_YEAR, str(seed)]).fetchall()


class Workload:
    """The DESIGN mix: who follows what, and which record each change touches."""

    def __init__(
        self,
        pool: list[tuple[str, str, str]],
        *,
        seed: int,
        major_share: float,
        followed_share: float,
    ):
        self.rng = random.Random(seed)
        self.pool = pool
        by_company = {company: record for record, company, _ in pool}
        self.companies = list(by_company)[:100]
        self.company_records = [by_company[c] for c in self.companies]
        slugs = sorted({slug for _, _, slug in pool})
        self.industries = self.rng.sample(slugs, min(10, len(slugs)))
        self.major_share = major_share
        self.followed_share = followed_share

    def plan(self, clients: int) -> list[list[str]]:
        companies = round(clients * 0.6)
        industries = round(clients * 0.3)
        plan = [[f"company:{self.companies[i % len(self.companies)]}"] for i in range(companies)]
        plan += [
            [f"industry:{self.industries[i % len(self.industries)]}"] for i in range(industries)
        ]
        plan += [["overview"]] * (clients - companies - industries)
        self.rng.shuffle(plan)
        return plan

    def pick(self) -> tuple[str, bool]:
        if self.rng.random() < self.followed_share:
            record = self.rng.choice(self.company_records)
        else:
            record = self.rng.choice(self.pool)[0]
        return record, self.rng.random() < self.major_share


# -- one cell ------------------------------------------------------------------------------------


def measure(
    stack: Stack,
    fleet: Fleet,
    writer: Writer,
    *,
    rate: float,
    warmup: float,
    seconds: float,
    pick,
    label: str,
    per_change: bool = False,
    drain_timeout: float = 15,
    loss_seq_lo: int | None = None,
) -> dict:
    """Write at `rate` for warmup + seconds; figures of the last `seconds`. The loss check
    covers the same changes, or with `loss_seq_lo=0` everything since each client
    subscribed (the warm-up and whatever else was published meanwhile)."""
    meter = CpuMeter(
        {
            "web": [stack.pid("web")],
            "publisher": [stack.pid("publisher")],
            "loadgens": fleet.pids,
            "redis": pids_named("redis-server"),
            "bench": [os.getpid()],  # this process: the writer thread
        }
    )
    stats: dict = {}
    thread = threading.Thread(target=writer.run, args=(rate, warmup + seconds, pick, stats))
    thread.start()
    time.sleep(warmup)
    seq_lo = writer.head_seq()
    from_ns = time.time_ns()
    first = meter.snapshot()
    pending_max, lag_max, unanswered = 0, 0, 0
    while thread.is_alive():
        status = stack.status_or_none(timeout=2)
        if status is None:
            unanswered += 1
        else:
            pending_max = max(pending_max, status["pending"])
            lag_max = max(lag_max, status["lag_ms"])
        thread.join(1.0)
    to_ns = writer.last_stamp_ns
    writer_done = time.monotonic()
    last = meter.snapshot()
    status_end = stack.status_or_none(timeout=2) or {"pending": None, "lag_ms": None}
    stack.publisher_idle()
    drained = fleet.drain(drain_timeout)
    # From the last change to every client at its context's head (the drain polls at 50 ms).
    caught_up_s = time.monotonic() - writer_done
    seq_hi = writer.head_seq()
    window = {
        "label": label,
        "from_ns": from_ns,
        "to_ns": to_ns,
        "seq_lo": seq_lo if loss_seq_lo is None else loss_seq_lo,
        "seq_hi": seq_hi,
        "per_change": per_change,
    }
    merged = reports_merge(fleet.report(window))
    window_s = (to_ns - from_ns) / 1e9
    merged.update(
        {
            "label": label,
            "rate": rate,
            "window_s": round(window_s, 2),
            "writer": stats,
            "deliveries_per_s": round(merged["frames_in_window"] / window_s),
            "items_per_s": round(merged["items_in_window"] / window_s),
            "seq_lo": seq_lo,
            "seq_hi": seq_hi,
            "drain_s": round(caught_up_s, 2),
            "behind_after_drain": drained["behind"],
            "publisher": {
                "pending_max": pending_max,
                "lag_ms_max": lag_max,
                "pending_end": status_end["pending"],
                "lag_ms_end": status_end["lag_ms"],
                # Status requests the web server did not answer within 2 s.
                "status_unanswered": unanswered,
            },
            "cpu_cores": CpuMeter.cores(first, last),
            "web_rss_kb": stack.rss_kb(),
            "stages": stages(stack.database_url, seq_lo, seq_hi),
            "web_gc": stack.gc_pauses(from_ns / 1e9, to_ns / 1e9),
        }
    )
    return merged


def cell_line(cell: dict) -> str:
    def ms(value):
        return "-" if value is None else f"{value:.1f}"

    cpu = cell["cpu_cores"]
    return (
        f"{cell['server']:8} N={cell['clients']:5} rate={cell['rate']:4} "
        f"p50={ms(cell['p50_ms'])} p95={ms(cell['p95_ms'])} p99={ms(cell['p99_ms'])} "
        f"max={ms(cell['max_ms'])} ms  deliveries/s={cell['deliveries_per_s']} "
        f"items/s={cell['items_per_s']} lost={cell['lost']} dup={cell['duplicates']} "
        f"gaps={cell['gaps']} lag_max={cell['publisher']['lag_ms_max']} ms "
        f"rss={cell['web_rss_kb'] // 1024} MB cpu web={cpu['web']} pub={cpu['publisher']} "
        f"loadgens={cpu['loadgens']} (max {cpu['loadgen_max']}) pg={cpu['postgres']} "
        f"others={cpu['others']} machine={cpu['machine']} lag(loadgen loop p99/max)="
        f"{cell['loadgen_loop_lag_ms']['p99']}/{cell['loadgen_loop_lag_ms']['max']} ms "
        f"stages={cell['stages']} by_kind={cell['by_kind']} gc={cell['web_gc']}"
    )


def fmt_ms(value) -> str:
    """Milliseconds as the reports print them."""
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"
