"""django-prometheus's PostgreSQL backend, without a new class per connection.

django-prometheus counts queries through a cursor class it builds with
`ExportingCursorWrapper(cursor_class, alias, vendor)` in `get_connection_params`, which
Django calls each time it takes a connection: with psycopg's pool and CONN_MAX_AGE 0,
that is every trip to the database thread (`database_sync_to_async`). Each call made a
class, its two methods and their closures, a reference cycle of about 20 objects that
only the garbage collector frees, for nothing: the pool's connections keep the cursor
class of the first call. Profiled with 200 slow readers reconnecting beside 1,000
clients (bench/slow_readers.py), these classes were most of what young collections
freed, 2,751 of them in 45 s, and freeing classes is slow: young collections of 2 to 17
ms and middle ones of 31 to 92 ms, each a stop of every delivery of the process. Here
the class is built once per (cursor class, alias, vendor); the metrics are the same.
"""

from __future__ import annotations

import functools

from django.db.backends.postgresql import base as postgresql
from django_prometheus.db.backends.postgresql import base as prometheus
from django_prometheus.db.common import ExportingCursorWrapper


@functools.cache
def exporting_cursor_class(cursor_class: type, alias: str, vendor: str) -> type:
    """django-prometheus's counting cursor class for one database, built once."""
    return ExportingCursorWrapper(cursor_class, alias, vendor)


class DatabaseWrapper(prometheus.DatabaseWrapper):
    def get_connection_params(self) -> dict:
        # Django's parameters, then django-prometheus's cursor class, shared.
        params = postgresql.DatabaseWrapper.get_connection_params(self)
        params["cursor_factory"] = exporting_cursor_class(
            params["cursor_factory"], self.alias, self.vendor
        )
        return params
