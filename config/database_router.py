"""The database router used when DATABASE_REPLICA_URL adds the "replica" alias.

It guesses nothing: every read and write goes to the primary unless the code names the
replica itself (`.using(alias)` with the alias that changes.replica / `state_for_read`
chose for a snapshot or a catch-up). Sessions, auth, connection rows, admission, the
publisher and the admin therefore never read a replica that may be behind.
"""

from __future__ import annotations

from typing import Any

from django.db import DEFAULT_DB_ALIAS


class PrimaryRouter:
    """Primary for everything not explicitly read from the replica."""

    def db_for_read(self, model: type, **hints: Any) -> str:
        # A related object of a row read from the replica (company.industry) is read
        # there too, so one snapshot stays on one database.
        instance = hints.get("instance")
        if instance is not None and instance._state.db:
            return instance._state.db
        return DEFAULT_DB_ALIAS

    def db_for_write(self, model: type, **hints: Any) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        # Both aliases hold the same rows.
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        # The replica replays the primary's schema; migrating it is neither needed nor
        # possible (it is read-only).
        return db == DEFAULT_DB_ALIAS
