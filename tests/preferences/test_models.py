"""The tables' constraints hold against raw SQL, and the seeded policies are the
documented defaults."""

import importlib

import pytest
from django.apps import apps
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction

from preferences.defaults import POLICY_DEFAULTS
from preferences.models import Category, RefreshPolicy, UserType
from tests.helpers import sql
from tests.preferences.conftest import anonymous_session

pytestmark = pytest.mark.django_db

seed = importlib.import_module("preferences.migrations.0002_seed_refresh_policies")

INSERT_POLICY = (
    "INSERT INTO refresh_policies (user_type, category, min_interval_ms, default_interval_ms,"
    " max_deliveries_per_minute, debounce_ms, allowed_transports, realtime_allowed)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
GOOD = ["registered", "directory", 0, 0, 600, 0, ["websocket"], True]


def test_the_migration_seeds_the_documented_defaults():
    for (user_type, _category), values in POLICY_DEFAULTS.items():
        assert seed.policy_values(user_type) == values
    assert sorted(POLICY_DEFAULTS) == sorted(
        (u, c) for u in UserType.values for c in Category.values
    )
    RefreshPolicy.objects.all().delete()
    Group.objects.filter(name="analyst").delete()
    seed.policies_seed(apps, None)
    fields = list(POLICY_DEFAULTS[("staff", "directory")])
    rows = {
        (row["user_type"], row["category"]): {k: row[k] for k in fields}
        for row in RefreshPolicy.objects.values()
    }
    assert rows == POLICY_DEFAULTS
    assert Group.objects.filter(name="analyst").exists()


def _refused(statement: str, params: list) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        sql(statement, params)


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, "robot"),  # unknown user type
        (1, "weather"),  # unknown category
        (2, 3_600_001),  # minimum interval over an hour
        (3, 3_600_001),  # default interval over an hour
        (4, 0),  # no delivery at all
        (4, 60_001),  # over the largest cap
        (5, 60_001),  # debounce over a minute
        (6, []),  # no transport
        (6, ["carrier-pigeon"]),  # unknown transport
    ],
)
def test_policy_values_out_of_bounds_are_refused_by_the_database(index, value):
    RefreshPolicy.objects.filter(user_type="registered", category="directory").delete()
    params = list(GOOD)
    params[index] = value
    _refused(INSERT_POLICY, params)


def test_policy_rules_between_fields_are_refused_by_the_database():
    RefreshPolicy.objects.filter(user_type="registered", category="directory").delete()
    # A default below the minimum (other than real time).
    _refused(INSERT_POLICY, ["registered", "directory", 30000, 10000, 600, 0, ["sse"], True])
    # A real-time default where real time is not allowed.
    _refused(INSERT_POLICY, ["registered", "directory", 0, 0, 600, 0, ["sse"], False])
    # Real time at the minimum interval, and an interval default, are fine.
    sql(INSERT_POLICY, ["registered", "directory", 30000, 0, 600, 0, ["sse"], True])
    # One policy per user type and category.
    _refused(INSERT_POLICY, ["registered", "directory", 0, 0, 600, 0, ["sse"], True])


def test_preferences_have_exactly_one_owner_and_whole_quiet_hours(regular_user):
    session = anonymous_session()
    insert = (
        "INSERT INTO refresh_preferences (user_id, session_id, paused, notification_threshold,"
        " quiet_hours_start, quiet_hours_end, quiet_hours_timezone)"
        " VALUES (%s, %s, false, %s, %s, %s, %s)"
    )
    _refused(insert, [None, None, "major", None, None, ""])
    _refused(insert, [regular_user.pk, session, "major", None, None, ""])
    _refused(insert, [regular_user.pk, None, "loud", None, None, ""])
    _refused(insert, [regular_user.pk, None, "major", "22:00", None, ""])
    _refused(insert, [regular_user.pk, None, "major", "22:00", "07:00", ""])
    _refused(insert, [regular_user.pk, None, "major", "22:00", "22:00", "UTC"])
    sql(insert, [regular_user.pk, None, "major", "22:00", "07:00", "Europe/Berlin"])
    sql(insert, [None, session, "none", None, None, ""])
    (preference,) = sql("SELECT id FROM refresh_preferences WHERE user_id = %s", [regular_user.pk])
    category = (
        "INSERT INTO refresh_category_preferences (preference_id, category, mode)"
        " VALUES (%s, %s, %s)"
    )
    _refused(category, [preference[0], "weather", "30s"])
    _refused(category, [preference[0], "directory", "7s"])
    sql(category, [preference[0], "directory", "30s"])
    _refused(category, [preference[0], "directory", "1m"])


def test_an_anonymous_session_takes_its_preferences_with_it():
    session = anonymous_session()
    sql(
        "INSERT INTO refresh_preferences (session_id, paused, notification_threshold,"
        " quiet_hours_timezone) VALUES (%s, true, 'major', '')",
        [session],
    )
    sql("DELETE FROM django_session WHERE session_key = %s", [session])
    assert sql("SELECT count(*) FROM refresh_preferences") == [(0,)]
