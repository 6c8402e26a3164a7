"""The low-latency publisher: a long-running loop around change_batch_publish."""

import asyncio
import contextlib
import logging
import signal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from changes.hooks import publisher_idle_run
from changes.publisher import changes_pending
from changes.services import publish_fan_out_schedule
from config.celery import celery_startup_check

logger = logging.getLogger(__name__)

# Wait after a failure (database or Redis away), doubling up to the maximum.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0


class Command(BaseCommand):
    help = (
        "Publish captured changes as they arrive: poll the unprocessed-changes index, "
        "debounce, publish, fan out, then schedule follow-up work. "
        "Safe to run several: one publishes at a time."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--poll",
            type=float,
            default=settings.PUBLISHER_POLL_INTERVAL,
            help="Seconds between idle probes (default %(default)s).",
        )
        parser.add_argument(
            "--debounce",
            type=float,
            default=settings.PUBLISHER_DEBOUNCE,
            help="Seconds to gather more changes once some arrived (default %(default)s).",
        )

    def handle(self, *args, poll: float, debounce: float, **options) -> None:
        # The publisher queues the benchmark recomputes: say at once if they would go
        # nowhere (another Celery app, a broker that does not answer).
        celery_startup_check(process="publisher")
        asyncio.run(self.run(poll=poll, debounce=debounce))

    async def run(self, *, poll: float, debounce: float) -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        pending = sync_to_async(changes_pending, thread_sensitive=True)
        retry = RETRY_FIRST_S
        logger.info("publisher running (poll %.3f s, debounce %.3f s)", poll, debounce)
        while not stopping.is_set():
            try:
                if not await pending():
                    # Idle: the hooks' chance to finish what waits (the last batches'
                    # figures go to Redis now, not with the next batch).
                    publisher_idle_run()
                    await _sleep_or_stop(stopping, poll)
                    continue
                await _sleep_or_stop(stopping, debounce)
                if await publish_fan_out_schedule() is None:
                    # Another publisher holds the lock; it will publish these.
                    await _sleep_or_stop(stopping, poll)
                retry = RETRY_FIRST_S
            except Exception:
                logger.exception("publisher failed; retrying in %.1f s", retry)
                await sync_to_async(close_old_connections, thread_sensitive=True)()
                await _sleep_or_stop(stopping, retry)
                retry = min(retry * 2, RETRY_MAX_S)
        logger.info("publisher stopped")


async def _sleep_or_stop(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
