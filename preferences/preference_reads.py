"""Reads of a client's stored refresh preferences (a signed-in user's, else the browser
session's): the snapshot its effective policy (preferences/selectors.py) is resolved
from, and whether its quiet hours hold."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

from preferences.models import Category, NotificationThreshold, RefreshPreference


@dataclass(frozen=True)
class QuietHours:
    """When a viewer wants no toasts: local times in a named time zone (may span midnight)."""

    start: dt.time
    end: dt.time
    timezone: str

    def as_dict(self) -> dict:
        return {
            "start": self.start.strftime("%H:%M"),
            "end": self.end.strftime("%H:%M"),
            "timezone": self.timezone,
        }

    def active_at(self, moment: dt.datetime) -> bool:
        """Whether `moment` (aware) falls inside the quiet hours, in their time zone."""
        local = moment.astimezone(zoneinfo.ZoneInfo(self.timezone)).time()
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


@dataclass(frozen=True)
class PreferenceSnapshot:
    """A client's stored preferences; `modes` holds only the categories it chose."""

    modes: dict[str, str] = field(default_factory=dict)
    paused: bool = False
    notification_threshold: str = NotificationThreshold.MAJOR.value
    quiet_hours: QuietHours | None = None

    def as_dict(self) -> dict:
        """The preferences as `GET /api/user/refresh-preferences` shows them."""
        return {
            "categories": {
                category: {"mode": self.modes.get(category, "default")}
                for category in Category.values
            },
            "paused": self.paused,
            "notification_threshold": self.notification_threshold,
            "quiet_hours": self.quiet_hours.as_dict() if self.quiet_hours else None,
        }


NO_PREFERENCES = PreferenceSnapshot()


def preference_row_get(*, user: Any, session_key: str | None) -> RefreshPreference | None:
    """The client's stored row (a signed-in user's, else the browser session's)."""
    rows = RefreshPreference.objects.prefetch_related("categories")
    if user is not None and getattr(user, "is_authenticated", False):
        return rows.filter(user=user).first()
    if session_key:
        return rows.filter(session_id=session_key).first()
    return None


def preference_snapshot_of(row: RefreshPreference | None) -> PreferenceSnapshot:
    if row is None:
        return NO_PREFERENCES
    quiet = None
    if row.quiet_hours_start is not None and row.quiet_hours_end is not None:
        quiet = QuietHours(row.quiet_hours_start, row.quiet_hours_end, row.quiet_hours_timezone)
    return PreferenceSnapshot(
        modes={c.category: c.mode for c in row.categories.all()},
        paused=row.paused,
        notification_threshold=row.notification_threshold,
        quiet_hours=quiet,
    )


def refresh_preferences_get(*, user: Any, session_key: str | None) -> PreferenceSnapshot:
    """The client's preferences (defaults when it stored none). Two queries at most."""
    return preference_snapshot_of(preference_row_get(user=user, session_key=session_key))


def quiet_hours_active(*, preferences: PreferenceSnapshot, at: dt.datetime | None = None) -> bool:
    """Whether the client is inside its quiet hours now (or at `at`): no toasts then."""
    if preferences.quiet_hours is None:
        return False
    return preferences.quiet_hours.active_at(at or dt.datetime.now(dt.UTC))
