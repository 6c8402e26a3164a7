"""`bench/` runs: a tiny fan-out scenario and a tiny loss soak on the real stack, then the
report.

Not a timing test: it checks that the benchmark machinery (bench database, the web server and
the publisher as processes, load generator processes, the loss check, the report) works,
so `make bench` does not rot between runs. Figures go to a temporary directory; the
committed ones in bench/results/ are left alone.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(300)


def _server_url() -> str:
    db = settings.DATABASES["default"]
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/postgres"


@pytest.fixture
def bench_database():
    name = f"carbon_bench_smoke_{os.getpid()}"
    yield name
    with psycopg.connect(_server_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_fanout_scenario_runs_and_reports(bench_database, tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": _server_url(),
        "BENCH_DATABASE": bench_database,
        "BENCH_RESULTS": str(tmp_path),
    }
    scenario = [sys.executable, "-m", "bench.fanout", "--server", "uvicorn"]
    scenario += ["--clients", "20", "--repeat", "2", "--rates", "2", "--seconds", "2"]
    scenario += ["--companies", "300", "--loadgen-timeout", "120"]
    subprocess.run(scenario, cwd=REPO, env=env, check=True, timeout=240)

    data = json.loads((tmp_path / "fanout.json").read_text())
    assert data["errors"] == []
    [run] = data["runs"]
    assert run["server"] == "uvicorn"
    assert run["connected"] == 20
    assert all(change["all_delivered"] for change in run["one_change"]["changes"])
    [step] = run["steps"]
    assert step["lost"] == 0 and step["duplicates"] == 0 and step["items_received"] > 0

    out = tmp_path / "benchmarks.md"
    report = [sys.executable, "-m", "bench.report", "--out", str(out)]
    subprocess.run(report, cwd=REPO, env=env, check=True, timeout=60)
    text = out.read_text()
    assert "## Fan-out" in text
    assert "uvicorn" in text


def test_loss_soak_runs_and_reports(bench_database, tmp_path):
    """One run of the loss soak on a database it creates: the Procfile's web, publisher,
    worker and beat, 20 clients, a few seconds of writes, the loss check, the report."""
    env = {
        **os.environ,
        "DATABASE_URL": _server_url(),
        "BENCH_RESULTS": str(tmp_path),
    }
    scenario = [sys.executable, "-m", "bench.soak_loss", "--database", bench_database]
    scenario += ["--runs", "1", "--clients", "20", "--rate", "20", "--warmup", "1"]
    scenario += ["--seconds", "2", "--companies", "300", "--loadgen-timeout", "120"]
    subprocess.run(scenario, cwd=REPO, env=env, check=True, timeout=120)

    data = json.loads((tmp_path / "soak_loss.json").read_text())
    [run] = data["runs"]
    assert "error" not in run
    assert run["fresh_database"] and run["connected"] == 20 and run["open_at_end"] == 20
    assert run["celery_ready_s"] is not None  # the worker of the Procfile ran
    assert run["lost"] == run["missing"] == run["duplicated"] == 0
    assert run["items_received"] > 0

    out = tmp_path / "benchmarks.md"
    report = [sys.executable, "-m", "bench.report", "--out", str(out)]
    subprocess.run(report, cwd=REPO, env=env, check=True, timeout=60)
    assert "## Loss soak" in out.read_text()
