"""Celery tasks of the operators' records. Thin: each calls one service."""

from celery import shared_task

from adminpanel.maintenance import maintenance_windows_apply
from adminpanel.refresh_metrics import refresh_metrics_prune, refresh_metrics_snapshot


@shared_task(ignore_result=True)
def maintenance_windows_apply_task() -> dict:
    """Announce, start and end the scheduled maintenance windows that are due."""
    return maintenance_windows_apply()


@shared_task(ignore_result=True)
def refresh_metrics_snapshot_task() -> int:
    """This minute's figures into refresh_metrics."""
    return refresh_metrics_snapshot()


@shared_task(ignore_result=True)
def refresh_metrics_prune_task() -> dict:
    """Retention of refresh_metrics and engagement events."""
    return refresh_metrics_prune()
