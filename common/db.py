"""Database chores every app shares."""

from __future__ import annotations

from collections.abc import Callable

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper


def rows_delete_in_batches(*, batch: int, delete_batch: Callable[[CursorWrapper], int]) -> int:
    """Call `delete_batch` (which deletes at most `batch` rows and says how many), each time
    in a transaction of its own, until it deletes fewer than `batch`. How many in all.

    A transaction per batch: retention must not lock a busy table's old rows all at once
    while live writes wait behind it."""
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            count = delete_batch(cursor)
        deleted += count
        if count < batch:
            return deleted
