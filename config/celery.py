"""The Celery application: broker from REDIS_URL, configuration from Django settings.

Also what tells whether Celery is there: each worker records itself in Redis with every
event heartbeat (`celery_workers_seen`), and `celery_startup_check` is what the web server
and the publisher run at start-up to log a wrong app or an unreachable broker.
"""

from __future__ import annotations

import logging
import os
import time

from celery import Celery, current_app
from celery.signals import heartbeat_sent
from django.conf import settings

from common.redis_connection import redis_client, redis_client_close

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

logger = logging.getLogger(__name__)

app = Celery("carbon")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# A worker sends an event heartbeat every 2 s (Celery's default) while it is connected
# to the broker; recording one in Redis every 5 s is enough for a check that calls a
# worker missing after CELERY_WORKER_STALE_S (30 s) and costs one HSET per 5 s.
WORKER_SEEN_EVERY_S = 5.0
# How long the start-up check waits for the broker: a local Redis answers in a
# millisecond; two seconds means it is not there, and start-up must not hang on it.
BROKER_CHECK_TIMEOUT_S = 2.0

_worker_seen_at = 0.0


def _workers_key() -> str:
    return f"{settings.REDIS_PREFIX}:celery:workers"


def _redis():
    return redis_client(
        socket_connect_timeout=BROKER_CHECK_TIMEOUT_S,
        socket_timeout=BROKER_CHECK_TIMEOUT_S,
    )


@heartbeat_sent.connect
def _worker_seen(sender, **kwargs) -> None:
    """Record this worker (hostname -> unix time) in Redis, at most every 5 s."""
    global _worker_seen_at
    now = time.monotonic()
    if now - _worker_seen_at < WORKER_SEEN_EVERY_S:
        return
    _worker_seen_at = now
    try:
        client = _redis()
        try:
            client.hset(_workers_key(), sender.eventer.hostname, time.time())
        finally:
            redis_client_close(client)
    except Exception as exc:  # the worker's own heartbeat must go on
        logger.warning("could not record this worker in Redis: %r", exc)


def celery_workers_seen(*, stale_after_s: float) -> list[dict]:
    """The workers that recorded themselves within `stale_after_s`, newest first, as
    `{"name", "seen_s"}`. Forgets those seen longer ago. Raises when Redis is away."""
    now = time.time()
    client = _redis()
    try:
        seen = client.hgetall(_workers_key())
        fresh, stale = [], []
        for name, at in seen.items():
            age = now - float(at)
            (fresh if age <= stale_after_s else stale).append((name.decode(), age))
        if stale:
            client.hdel(_workers_key(), *(name for name, _ in stale))
    finally:
        redis_client_close(client)
    return [
        {"name": name, "seen_s": round(age, 1)} for name, age in sorted(fresh, key=lambda w: w[1])
    ]


def celery_broker_reachable(*, celery_app: Celery | None = None) -> None:
    """Connect to the broker of `celery_app` (default: the project's); raises if it
    cannot within BROKER_CHECK_TIMEOUT_S."""
    celery_app = celery_app or app
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_CHECK_TIMEOUT_S)


def celery_app_problem(*, celery_app: Celery | None = None) -> str | None:
    """Why tasks sent from this process would not reach the project's workers, or None:
    the current Celery app is another one (the project package was not imported), its
    broker is not the configured one, or the broker does not answer."""
    celery_app = celery_app or app
    current = current_app._get_current_object()
    if current is not celery_app:
        return f"tasks would go to Celery app {current.main!r}, not the project's"
    if celery_app.conf.broker_url != settings.CELERY_BROKER_URL:
        return "the Celery app's broker is not CELERY_BROKER_URL"
    try:
        celery_broker_reachable(celery_app=celery_app)
    except Exception as exc:
        return f"the Celery broker does not answer ({type(exc).__name__}: {exc})"
    return None


def celery_startup_check(*, process: str, celery_app: Celery | None = None) -> str | None:
    """Log an error if this process's tasks would not reach the workers; the problem or
    None. The process goes on either way: live updates do not depend on Celery."""
    problem = celery_app_problem(celery_app=celery_app)
    if problem:
        logger.error(
            "%s: %s; benchmark recomputes and other background tasks will not run",
            process,
            problem,
        )
    return problem


def celery_status() -> dict:
    """What the health answer and the monitoring page show of Celery: the broker's kind
    (never its address: the health answer is public), whether it answers, how many
    workers recorded themselves within CELERY_WORKER_STALE_S and how long ago the newest
    did. `ok` only when the broker answers and a worker was seen."""
    status: dict = {
        "ok": False,
        "app": app.main,
        "broker": app.conf.broker_url.partition("://")[0],
        "broker_ok": False,
        "workers": None,
        "worker_seen_s": None,
    }
    try:
        celery_broker_reachable()
        status["broker_ok"] = True
    except Exception as exc:
        status["error"] = type(exc).__name__
        return status
    try:
        workers = celery_workers_seen(stale_after_s=settings.CELERY_WORKER_STALE_S)
    except Exception as exc:
        status["error"] = type(exc).__name__
        return status
    status["workers"] = len(workers)
    status["worker_seen_s"] = workers[0]["seen_s"] if workers else None
    status["ok"] = bool(workers)
    return status
