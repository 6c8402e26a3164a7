"""The project's database backend (config/database): django-prometheus's query metrics,
without a new cursor class, a reference cycle, each time a connection is taken."""

from __future__ import annotations

import gc

import pytest
from django.db import connection
from django_prometheus.db import metrics
from psycopg import Cursor

pytestmark = pytest.mark.django_db(transaction=True)


def executed() -> float:
    return metrics.execute_total.labels(connection.alias, connection.vendor)._value.get()


def test_connections_taken_from_the_pool_leave_no_class_for_the_collector():
    connection.close()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(20):
            # What every trip to the database thread does (CONN_MAX_AGE 0, the pool).
            connection.ensure_connection()
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            connection.close()
        gc.collect()
        classes = [obj.__qualname__ for obj in gc.garbage if isinstance(obj, type)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert classes == []


def test_queries_are_still_counted_by_one_shared_cursor_class():
    first = connection.get_connection_params()["cursor_factory"]
    assert connection.get_connection_params()["cursor_factory"] is first
    assert issubclass(first, Cursor)
    before = executed()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.execute("SELECT 2")
    assert executed() == before + 2
