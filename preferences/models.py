"""Refresh policies (per user type and data category) and viewers' refresh preferences.

A policy bounds what a preference may ask for; `preferences.selectors` combines the two
into the effective policy a live connection is held to. Every rule that the database can
check is a constraint here, so raw SQL and the admin cannot store a policy the server
could not apply.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.sessions.models import Session
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now


class UserType(models.TextChoices):
    """Who a client is, for its policy: the first that applies, from the bottom up."""

    ANONYMOUS = "anonymous", "anonymous"
    REGISTERED = "registered", "registered"
    # A member of the Django group named ANALYST_GROUP.
    ANALYST = "analyst", "analyst"
    STAFF = "staff", "staff"


# The Django group whose members are analysts (created by the data migration).
ANALYST_GROUP = "analyst"


class Category(models.TextChoices):
    """What kind of data a context carries (preferences.selectors.context_category)."""

    COMPANY_METRICS = "company_metrics", "company metrics"
    INDUSTRY_BENCHMARKS = "industry_benchmarks", "industry benchmarks"
    DIRECTORY = "directory", "directory"
    ANNOUNCEMENTS = "announcements", "announcements"


class Transport(models.TextChoices):
    WEBSOCKET = "websocket", "WebSocket"
    SSE = "sse", "Server-Sent Events"
    POLLING = "polling", "polling"


class Mode(models.TextChoices):
    """A viewer's refresh mode for one category."""

    REALTIME = "realtime", "real time"
    S10 = "10s", "every 10 s"
    S30 = "30s", "every 30 s"
    M1 = "1m", "every minute"
    M5 = "5m", "every 5 minutes"
    MANUAL = "manual", "manual"


# The interval each mode stands for; None: manual (no live batches until asked).
MODE_INTERVAL_MS: dict[str, int | None] = {
    Mode.REALTIME: 0,
    Mode.S10: 10_000,
    Mode.S30: 30_000,
    Mode.M1: 60_000,
    Mode.M5: 300_000,
    Mode.MANUAL: None,
}


class NotificationThreshold(models.TextChoices):
    """The lowest significance that gets a toast; `none`: no toasts."""

    MINOR = "minor", "minor and above"
    MAJOR = "major", "major and above"
    CRITICAL = "critical", "critical only"
    NONE = "none", "none"


# Bounds of policy values, checked by the database and by the services.
# An interval above an hour is no longer "refresh" but an outage.
POLICY_MAX_INTERVAL_MS = 3_600_000
# One delivery per millisecond per context is already far above any display's rate.
POLICY_MAX_DELIVERIES_PER_MINUTE = 60_000
# Gathering changes for longer than a minute before sending them is an interval's job.
POLICY_MAX_DEBOUNCE_MS = 60_000


def _in(field: str, choices: type[models.TextChoices]) -> Q:
    return Q(**{f"{field}__in": choices.values})


def _choices_valid(prefix: str, **fields: type[models.TextChoices]) -> list[models.CheckConstraint]:
    """A check per field that it holds one of its choices, named `<prefix>_<field>_valid`."""
    return [
        models.CheckConstraint(condition=_in(field, choices), name=f"{prefix}_{field}_valid")
        for field, choices in fields.items()
    ]


class RefreshPolicy(models.Model):
    """How often clients of one user type may be sent one category of data."""

    user_type = models.CharField(max_length=16, choices=UserType.choices)
    category = models.CharField(max_length=32, choices=Category.choices)
    min_interval_ms = models.PositiveIntegerField(
        default=0,
        help_text="Batches of one context never come closer together than this (0: as "
        "published). Preferences for shorter intervals are refused.",
    )
    default_interval_ms = models.PositiveIntegerField(
        default=0,
        help_text="For clients without a preference: 0 is real time (needs real time "
        "allowed), else an interval of at least the minimum.",
    )
    max_deliveries_per_minute = models.PositiveIntegerField(
        default=6000,
        help_text="Per context: deliveries are spaced by at least 60,000 / this ms; "
        "what arrives closer is merged into the next batch, never dropped.",
    )
    debounce_ms = models.PositiveIntegerField(
        default=0,
        help_text="A live batch waits this long for more changes of its context before "
        "it is sent with them.",
    )
    allowed_transports = ArrayField(
        models.CharField(max_length=16, choices=Transport.choices),
        default=list,
        help_text="A connection carries every category, so a transport is open to a user "
        "type only where all four of its categories allow it.",
    )
    realtime_allowed = models.BooleanField(default=True)
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "refresh_policies"
        ordering = ["user_type", "category"]
        verbose_name = "refresh policy"
        verbose_name_plural = "refresh policies"
        constraints = [
            models.UniqueConstraint(
                fields=["user_type", "category"], name="refresh_policy_unique_type_category"
            ),
            *_choices_valid("refresh_policy", user_type=UserType, category=Category),
            models.CheckConstraint(
                condition=Q(min_interval_ms__lte=POLICY_MAX_INTERVAL_MS)
                & Q(default_interval_ms__lte=POLICY_MAX_INTERVAL_MS),
                name="refresh_policy_intervals_bounded",
            ),
            models.CheckConstraint(
                condition=Q(default_interval_ms__gte=F("min_interval_ms"))
                | Q(default_interval_ms=0, realtime_allowed=True),
                name="refresh_policy_default_not_below_min",
            ),
            models.CheckConstraint(
                condition=Q(realtime_allowed=True) | Q(default_interval_ms__gt=0),
                name="refresh_policy_default_realtime_allowed",
            ),
            models.CheckConstraint(
                condition=Q(max_deliveries_per_minute__gte=1)
                & Q(max_deliveries_per_minute__lte=POLICY_MAX_DELIVERIES_PER_MINUTE),
                name="refresh_policy_deliveries_bounded",
            ),
            models.CheckConstraint(
                condition=Q(debounce_ms__lte=POLICY_MAX_DEBOUNCE_MS),
                name="refresh_policy_debounce_bounded",
            ),
            models.CheckConstraint(
                condition=Q(allowed_transports__contained_by=Transport.values)
                & ~Q(allowed_transports=[]),
                name="refresh_policy_transports_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_type}/{self.category}"


class RefreshPreference(models.Model):
    """One client's refresh preferences: a signed-in user's, or an anonymous browser
    session's (deleted with the session)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="refresh_preference",
    )
    session = models.OneToOneField(
        Session,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="refresh_preference",
    )
    paused = models.BooleanField(
        default=False, help_text="Connections start paused (the client resumes them)."
    )
    notification_threshold = models.CharField(
        max_length=16,
        choices=NotificationThreshold.choices,
        default=NotificationThreshold.MAJOR,
    )
    quiet_hours_start = models.TimeField(null=True, blank=True)
    quiet_hours_end = models.TimeField(null=True, blank=True)
    quiet_hours_timezone = models.CharField(max_length=64, blank=True, default="")
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "refresh_preferences"
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False, session__isnull=True)
                | Q(user__isnull=True, session__isnull=False),
                name="refresh_preference_one_owner",
            ),
            models.CheckConstraint(
                condition=_in("notification_threshold", NotificationThreshold),
                name="refresh_preference_threshold_valid",
            ),
            models.CheckConstraint(
                condition=Q(
                    quiet_hours_start__isnull=True,
                    quiet_hours_end__isnull=True,
                    quiet_hours_timezone="",
                )
                | (
                    Q(quiet_hours_start__isnull=False, quiet_hours_end__isnull=False)
                    & ~Q(quiet_hours_timezone="")
                    & ~Q(quiet_hours_start=F("quiet_hours_end"))
                ),
                name="refresh_preference_quiet_hours_whole",
            ),
        ]

    def __str__(self) -> str:
        if self.user_id is not None:
            return f"user {self.user_id}"
        return f"session {str(self.session_id)[:8]}…"


class CategoryPreference(models.Model):
    """A client's refresh mode for one category (absent: the policy's default)."""

    preference = models.ForeignKey(
        RefreshPreference, on_delete=models.CASCADE, related_name="categories"
    )
    category = models.CharField(max_length=32, choices=Category.choices)
    mode = models.CharField(max_length=16, choices=Mode.choices)

    class Meta:
        db_table = "refresh_category_preferences"
        ordering = ["category"]
        constraints = [
            models.UniqueConstraint(
                fields=["preference", "category"], name="category_preference_unique"
            ),
            *_choices_valid("category_preference", category=Category, mode=Mode),
        ]

    def __str__(self) -> str:
        return f"{self.category}: {self.mode}"
