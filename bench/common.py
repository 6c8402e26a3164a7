"""Shared plumbing of the benchmarks: the bench database, results, the machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
# BENCH_RESULTS sends figures elsewhere (the smoke test), leaving the committed ones alone.
RESULTS = Path(os.environ.get("BENCH_RESULTS") or REPO / "bench" / "results")
BENCH_DB = os.environ.get("BENCH_DATABASE", "carbon_bench")


def server_url() -> str:
    """The PostgreSQL server of DATABASE_URL (the bench uses its own database there)."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("DATABASE_URL is not set: run through `make bench` (it starts what is needed)")
    return url


def bench_url() -> str:
    """DATABASE_URL with the bench database in place of its own."""
    base, _, _ = server_url().rpartition("/")
    return f"{base}/{BENCH_DB}"


def manage(*args: str, database_url: str | None = None) -> None:
    """Run a manage.py command against the bench database."""
    env = {**os.environ, "DATABASE_URL": database_url or bench_url()}
    subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, check=True)


def bench_database_ready(*, companies: int) -> str:
    """Create, migrate and seed the bench database once; returns its URL."""
    admin_url = server_url().rpartition("/")[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    manage("migrate", "--noinput", "-v", "0")
    with psycopg.connect(bench_url()) as conn:
        have = conn.execute("SELECT count(*) FROM companies").fetchone()[0]
    if have != companies:
        manage("seed_demo", "--replace", "--no-progress", "--companies", str(companies))
    return bench_url()


def machine() -> dict:
    """Where a figure was measured."""
    memory_kb = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def result_write(name: str, data: dict) -> Path:
    """Store one scenario's figures as JSON under bench/results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2, default=str))
    return path


def verdict(ok: bool) -> str:
    """The last column of a figure's row in docs/benchmarks.md."""
    return "meets" if ok else "**misses**"
