"""Celery tasks of the live transports."""

import datetime as dt

from celery import shared_task
from django.conf import settings

from realtime.services import connections_sweep


@shared_task(ignore_result=True)
def connections_sweep_task() -> int:
    """Remove connection rows of crashed processes."""
    return connections_sweep(older_than=dt.timedelta(seconds=settings.REALTIME_CONNECTION_STALE_S))
