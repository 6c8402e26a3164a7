"""The effective policy: the policy bounds the preference, in one selector."""

import datetime as dt

import pytest
from django.contrib.auth.models import AnonymousUser

from preferences.models import Category
from preferences.preference_reads import PreferenceSnapshot, QuietHours, quiet_hours_active
from preferences.selectors import (
    client_policy_combine,
    client_policy_resolve,
    context_category,
    refresh_policy_table,
    refresh_policy_table_load,
    transport_allowed,
    user_type_of,
)
from preferences.services import refresh_preferences_update
from tests.preferences.conftest import anonymous_session, policy_set, user_with_token

pytestmark = pytest.mark.django_db


def test_contexts_map_to_categories():
    assert context_category("company:5b0c6a62-0d3f-4a7e-9b61-2f1d8a2c1e55") == "company_metrics"
    assert context_category("overview") == "company_metrics"
    assert context_category("industry:steel") == "industry_benchmarks"
    assert context_category("companies") == "directory"
    assert context_category("system") == "announcements"
    assert context_category("weather") is None


def test_user_types(regular_user, staff_user):
    analyst, _ = user_with_token("ana", analyst=True)
    assert user_type_of(AnonymousUser()) == "anonymous"
    assert user_type_of(None) == "anonymous"
    assert user_type_of(regular_user) == "registered"
    assert user_type_of(analyst) == "analyst"
    assert user_type_of(staff_user) == "staff"


def test_without_preferences_the_policy_defaults_apply(settings):
    resolved = client_policy_resolve(user=AnonymousUser(), session_key=None)
    policy = resolved.policy
    assert policy["user_type"] == "anonymous"
    assert set(policy["categories"]) == set(Category.values)
    for entry in policy["categories"].values():
        assert entry == {
            "mode": "realtime",
            "interval_ms": 0,
            "min_interval_ms": 0,
            "max_deliveries_per_minute": 6000,
            "debounce_ms": 0,
            "realtime_allowed": True,
        }
    assert policy["min_interval_ms"] == 0 and policy["debounce_ms"] == 0
    assert policy["max_batch"] == settings.REALTIME_DEFAULT_POLICY["max_batch"]
    assert policy["heartbeat_ms"] == settings.REALTIME_DEFAULT_POLICY["heartbeat_ms"]
    assert policy["allowed_transports"] == ["websocket", "sse", "polling"]
    assert policy["paused"] is False
    assert policy["notification_threshold"] == "major"
    assert policy["quiet_hours"] is None


def test_the_policy_bounds_the_preference(regular_user):
    refresh_preferences_update(
        user=regular_user,
        session_key=None,
        document={
            "categories": {
                "company_metrics": {"mode": "10s"},
                "industry_benchmarks": {"mode": "realtime"},
                "directory": {"mode": "manual"},
            },
            "paused": True,
            "notification_threshold": "critical",
            "quiet_hours": {"start": "22:30", "end": "06:00", "timezone": "Europe/Berlin"},
        },
    )
    # Staff later raise the minimum above the stored choice and forbid real time.
    policy_set("registered", "company_metrics", min_interval_ms=30000, default_interval_ms=60000)
    policy_set(
        "registered",
        "industry_benchmarks",
        realtime_allowed=False,
        min_interval_ms=5000,
        default_interval_ms=60000,
        debounce_ms=250,
    )
    policy = client_policy_resolve(user=regular_user, session_key=None).policy
    categories = policy["categories"]
    # 10 s is raised to the new minimum, not refused after the fact.
    assert categories["company_metrics"]["mode"] == "interval"
    assert categories["company_metrics"]["interval_ms"] == 30000
    assert categories["company_metrics"]["min_interval_ms"] == 30000
    # Real time no longer allowed: the policy's default interval.
    assert categories["industry_benchmarks"] == {
        "mode": "interval",
        "interval_ms": 60000,
        "min_interval_ms": 5000,
        "max_deliveries_per_minute": 6000,
        "debounce_ms": 250,
        "realtime_allowed": False,
    }
    assert categories["directory"]["mode"] == "manual"
    assert categories["directory"]["interval_ms"] is None
    assert categories["announcements"]["mode"] == "realtime"
    # The top-level keys keep their meaning: the smallest interval and debounce of any
    # context's category (manual counts its minimum: 0 here).
    assert policy["min_interval_ms"] == 0
    assert policy["debounce_ms"] == 0
    assert policy["paused"] is True
    assert policy["notification_threshold"] == "critical"
    assert policy["quiet_hours"] == {"start": "22:30", "end": "06:00", "timezone": "Europe/Berlin"}


def test_server_wide_floors_bound_every_policy(settings):
    settings.REALTIME_DEFAULT_POLICY = {
        **settings.REALTIME_DEFAULT_POLICY,
        "min_interval_ms": 400,
        "debounce_ms": 50,
    }
    policy = client_policy_resolve(user=AnonymousUser(), session_key=None).policy
    assert policy["min_interval_ms"] == 400 and policy["debounce_ms"] == 50
    assert policy["categories"]["directory"]["interval_ms"] == 400


def test_a_transport_is_open_where_every_category_allows_it(regular_user):
    policy_set("registered", "directory", allowed_transports=["websocket", "polling"])
    resolved = client_policy_resolve(user=regular_user, session_key=None)
    assert resolved.policy["allowed_transports"] == ["websocket", "polling"]
    assert transport_allowed(user=regular_user, transport="websocket")
    assert not transport_allowed(user=regular_user, transport="sse")
    assert transport_allowed(user=AnonymousUser(), transport="sse")


def test_anonymous_preferences_belong_to_the_session():
    session = anonymous_session()
    five_minutes = {"categories": {"directory": {"mode": "5m"}}}
    refresh_preferences_update(user=AnonymousUser(), session_key=session, document=five_minutes)
    mine = client_policy_resolve(user=AnonymousUser(), session_key=session).policy
    other = client_policy_resolve(user=AnonymousUser(), session_key=anonymous_session()).policy
    assert mine["categories"]["directory"]["interval_ms"] == 300_000
    assert other["categories"]["directory"]["mode"] == "realtime"


def test_resolving_costs_few_queries(django_assert_num_queries, regular_user):
    refresh_policy_table()  # warm the process cache
    with django_assert_num_queries(0):
        client_policy_resolve(user=AnonymousUser(), session_key=None)
    # The analyst group, the preferences and their categories (none stored: 2 queries).
    with django_assert_num_queries(2):
        known = client_policy_resolve(user=regular_user, session_key=None)
    # Re-resolving after a policy edit reuses what the session knows: no query at all.
    with django_assert_num_queries(0):
        client_policy_resolve(user=regular_user, session_key=None, known=known)


def test_the_cache_is_dropped_by_a_version_and_by_forget(django_assert_num_queries):
    first = refresh_policy_table(version="v1")
    with django_assert_num_queries(0):
        assert refresh_policy_table(version="v1") is first
        assert refresh_policy_table() is first
    with django_assert_num_queries(1):
        refresh_policy_table(version="v2")


def test_combine_is_pure():
    table = refresh_policy_table_load()
    snapshot = PreferenceSnapshot(modes={"company_metrics": "1m"})
    resolved = client_policy_combine(user_type="analyst", preferences=snapshot, table=table)
    assert resolved.policy["categories"]["company_metrics"]["interval_ms"] == 60000
    assert resolved.policy["user_type"] == "analyst"


def test_quiet_hours_span_midnight_in_their_time_zone():
    quiet = PreferenceSnapshot(quiet_hours=QuietHours(dt.time(22), dt.time(6), "Europe/Berlin"))
    winter = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)
    assert quiet_hours_active(preferences=quiet, at=winter.replace(hour=21, minute=30))  # 22:30
    assert quiet_hours_active(preferences=quiet, at=winter.replace(hour=4))  # 05:00
    assert not quiet_hours_active(preferences=quiet, at=winter.replace(hour=5))  # 06:00
    assert not quiet_hours_active(preferences=quiet, at=winter.replace(hour=12))
    day = PreferenceSnapshot(quiet_hours=QuietHours(dt.time(9), dt.time(17), "UTC"))
    assert quiet_hours_active(preferences=day, at=winter.replace(hour=9))
    assert not quiet_hours_active(preferences=day, at=winter.replace(hour=17))
    assert not quiet_hours_active(preferences=PreferenceSnapshot(), at=winter)
