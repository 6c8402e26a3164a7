"""Celery tasks of the tracked domain. Thin: each calls one service."""

from celery import shared_task

from emissions.services import industry_benchmarks_recompute


@shared_task(ignore_result=True)
def industry_benchmarks_recompute_task(industry_id: str) -> int:
    """Recompute one industry's benchmarks (scheduled, debounced, after the publisher's
    batches that changed its records: emissions/publishing.py)."""
    return industry_benchmarks_recompute(industry_id=industry_id)
