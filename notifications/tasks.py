"""Celery tasks of notifications. Thin: each calls one service."""

from celery import shared_task

from notifications.services import notifications_prune


@shared_task(ignore_result=True)
def notifications_prune_task() -> int:
    """Retention: delete notifications expired for longer than NOTIFY_RETENTION_DAYS."""
    return notifications_prune()
