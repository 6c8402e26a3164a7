"""Celery for real: tasks sent by the product's processes reach a real worker on the
configured Redis broker, and the benchmark recompute path runs end to end with a worker
and beat as the Procfile starts them (no eager mode anywhere)."""

import json
import re
import time

import httpx
import pytest
from celery import Celery
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect

from config.celery import app as project_app
from config.celery import celery_app_problem
from tests.helpers import sql
from tests.live.conftest import benchmark_recompute_send, free_port, stack_env, stack_start
from tests.live.test_websocket_live import recv

pytestmark = [pytest.mark.timeout(180)]

adb = database_sync_to_async(sql)


def wait_until(predicate, *, timeout: float, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s")


@pytest.fixture
def worker_stack(transactional_db, tmp_path):
    """A Celery worker (the Procfile's command) and the web server, on this test's
    database and broker; workers count as missing 3 s after their last record."""
    env = stack_env(CELERY_WORKER_STALE_S="3")
    stack = stack_start(("web", "worker"), env=env, logs=tmp_path)
    yield stack
    stack.stop_all(timeout=10)


def health(stack) -> dict:
    return httpx.get(f"{stack.http_url}/api/realtime/health", timeout=10).json()


def test_a_task_sent_from_a_manage_py_process_reaches_a_real_worker(worker_stack, world):
    """A process started like the publisher (manage.py, no `celery --app`) sends
    industry_benchmarks_recompute_task with apply_async; the worker on the configured
    Redis broker runs it. The health answer then shows the worker, and shows it missing
    once it stopped."""
    steel = str(world["steel"])
    assert sql("SELECT count(*) FROM industry_benchmarks") == [(0,)]
    benchmark_recompute_send(worker_stack.env, steel)
    rows = wait_until(
        lambda: sql("SELECT count(*) FROM industry_benchmarks WHERE industry_id = %s", [steel])[0][
            0
        ],
        timeout=60,
    )
    assert rows > 0
    assert "industry_benchmarks_recompute_task" in worker_stack.log("worker")

    seen = wait_until(lambda: (h := health(worker_stack))["celery"]["workers"] and h, timeout=20)
    celery = seen["celery"]
    assert celery["ok"] and celery["broker_ok"] and celery["broker"] == "redis"
    assert celery["app"] == "carbon" and celery["worker_seen_s"] < 10
    assert seen["status"] == "ok"  # Celery is beside the checks, not among them

    worker_stack.stop("worker", timeout=15)
    gone = wait_until(
        lambda: (h := health(worker_stack))["celery"]["workers"] == 0 and h, timeout=20
    )
    assert gone["celery"]["ok"] is False and gone["celery"]["broker_ok"] is True
    assert gone["status"] == "ok"


@pytest.mark.asyncio
async def test_benchmark_recompute_reaches_industry_subscribers(transactional_db, world, tmp_path):
    """Raw SQL moves a company's total; the publisher queues the recompute, the worker
    runs it after its (shortened) debounce window, and the benchmark change, with its
    impact, reaches a WebSocket subscriber of the industry. Web, publisher, worker and
    beat run as the Procfile starts them."""
    from emissions.services import industry_benchmarks_recompute

    # The starting benchmarks, as seed_demo computes them at load.
    await database_sync_to_async(industry_benchmarks_recompute)(industry_id=str(world["steel"]))
    env = stack_env(BENCHMARK_DEBOUNCE_SECONDS="1", REALTIME_MAX_CONNECTIONS_PER_ADDRESS="100")
    stack = stack_start(("web", "publisher", "worker", "beat"), env=env, logs=tmp_path)
    try:
        # The starting benchmarks are published before the client subscribes.
        await database_sync_to_async(wait_until)(
            lambda: sql("SELECT count(*) FROM data_changes WHERE processed_at IS NULL") == [(0,)],
            timeout=30,
        )
        async with connect(stack.ws_url) as ws:
            await recv(ws, "hello")
            await ws.send(json.dumps({"type": "subscribe", "contexts": ["industry:steel"]}))
            await recv(ws, "subscribed")
            await adb(
                "UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 50000000"
                " WHERE company_id = %s AND year = 2024",
                [world["acme"]],
            )
            started = time.monotonic()
            benchmark = None
            while benchmark is None:
                left = max(0.1, 40 - (time.monotonic() - started))
                batch = await recv(ws, "batch", timeout=left)
                benchmark = next(
                    (
                        item
                        for item in batch["changes"]
                        if item["entity"] == "industry_benchmark"
                        and item["fields"].get("metric") == "total_tonnes"
                        and item["fields"].get("year") == 2024
                    ),
                    None,
                )
        impact = benchmark["fields"]["impact"]
        assert benchmark["op"] == "update"
        assert float(impact["median_after"]) > float(impact["median_before"]) + 49_000_000
        assert "industry_benchmarks_recompute_task" in stack.log("worker")
        # The debounce window held it back: not before 1 s after the change.
        assert time.monotonic() - started >= 1.0
    finally:
        stack.stop_all(timeout=10)


def test_startup_check_names_another_celery_app():
    """A process whose current Celery app is not the project's is told so."""
    other = Celery("other", broker="memory://", set_as_current=False)
    other.set_current()
    try:
        assert "'other', not the project's" in celery_app_problem()
    finally:
        project_app.set_current()
    assert celery_app_problem() is None


def test_publisher_logs_an_unreachable_broker(transactional_db, tmp_path):
    """The publisher started with a broker that does not answer logs an error at once,
    and keeps publishing (live updates do not depend on Celery)."""
    closed = free_port()
    env = stack_env(CELERY_BROKER_URL=f"redis://127.0.0.1:{closed}/0")
    stack = stack_start(("publisher",), env=env, logs=tmp_path)
    try:
        wait_until(lambda: "publisher running" in stack.log("publisher"), timeout=30)
        log = stack.log("publisher")
        assert "ERROR config.celery: publisher: the Celery broker does not answer" in log
        assert stack.processes["publisher"].poll() is None
    finally:
        stack.stop_all()


def test_every_beat_task_runs_on_a_real_worker(worker_stack, world):
    """Each task of CELERY_BEAT_SCHEDULE, sent by name as beat sends it, is registered
    in the worker and succeeds there on a real database."""
    from django.conf import settings

    names = sorted({entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()})
    for name in names:
        project_app.send_task(name)

    def succeeded(name: str) -> bool:
        pattern = rf"Task {re.escape(name)}\[[0-9a-f-]+\] succeeded in"
        return re.search(pattern, worker_stack.log("worker")) is not None

    wait_until(lambda: all(succeeded(name) for name in names), timeout=60)
    assert "Traceback" not in worker_stack.log("worker")


@pytest.mark.asyncio
async def test_beat_publishes_when_no_publisher_runs(transactional_db, world, tmp_path):
    """The safety net for real: with no run_publisher, beat's one-second tick has the
    worker publish a raw SQL change, and it reaches a WebSocket subscriber."""
    env = stack_env(REALTIME_MAX_CONNECTIONS_PER_ADDRESS="100")
    stack = stack_start(("web", "worker", "beat"), env=env, logs=tmp_path)
    try:
        async with connect(stack.ws_url) as ws:
            await recv(ws, "hello")
            await ws.send(json.dumps({"type": "subscribe", "contexts": ["industry:steel"]}))
            await recv(ws, "subscribed")
            await adb("UPDATE companies SET name = 'Beat Steel' WHERE id = %s", [world["acme"]])
            while True:
                batch = await recv(ws, "batch", timeout=30)
                if any(i["fields"].get("name") == "Beat Steel" for i in batch["changes"]):
                    break
        assert "changes.tasks.publish_changes_task" in stack.log("worker")
    finally:
        stack.stop_all(timeout=10)
