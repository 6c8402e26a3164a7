"""Celery tasks of the change pipeline. Thin: each calls one service."""

from asgiref.sync import async_to_sync
from celery import shared_task

from changes.hooks import publisher_idle_run
from changes.services import change_log_prune, publish_fan_out_schedule


@shared_task(ignore_result=True)
def publish_changes_task() -> int:
    """The beat safety net: publish until nothing is pending (or another publisher is)."""
    published = 0
    try:
        while True:
            result = async_to_sync(publish_fan_out_schedule)()
            if not result or not result.changes:
                return published
            published += result.changes
            if not result.has_more:
                return published
    finally:
        if published:
            publisher_idle_run()


@shared_task(ignore_result=True)
def change_log_prune_task() -> int:
    """Retention: delete published changes older than CHANGE_RETENTION_DAYS."""
    return change_log_prune()
