"""Seed the 16 refresh policies and the `analyst` group.

The values are written out here, not imported, so this migration keeps doing what it
did when the defaults in preferences/defaults.py change later (that module says why
these values; tests/preferences/test_models.py checks that the two agree today).
"""

from django.db import migrations

USER_TYPES = ["anonymous", "registered", "analyst", "staff"]
CATEGORIES = ["company_metrics", "industry_benchmarks", "directory", "announcements"]
TRANSPORTS = ["websocket", "sse", "polling"]


def policy_values(user_type: str) -> dict:
    return {
        "min_interval_ms": 0,
        "default_interval_ms": 0,
        "max_deliveries_per_minute": 60_000 if user_type == "staff" else 6000,
        "debounce_ms": 0,
        "allowed_transports": list(TRANSPORTS),
        "realtime_allowed": True,
    }


def policies_seed(apps, schema_editor):
    RefreshPolicy = apps.get_model("preferences", "RefreshPolicy")
    Group = apps.get_model("auth", "Group")
    for user_type in USER_TYPES:
        for category in CATEGORIES:
            RefreshPolicy.objects.get_or_create(
                user_type=user_type, category=category, defaults=policy_values(user_type)
            )
    Group.objects.get_or_create(name="analyst")


def policies_unseed(apps, schema_editor):
    apps.get_model("preferences", "RefreshPolicy").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("preferences", "0001_refresh_policies_and_preferences"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(policies_seed, policies_unseed)]
