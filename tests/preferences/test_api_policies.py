"""`GET/PUT /api/admin/refresh-policies` on the real ASGI application: staff only,
every change audited, validation with reasons, all or nothing."""

import json

import pytest

from adminpanel.models import AuditEntry
from preferences.models import RefreshPolicy
from tests.preferences.conftest import (
    POLICIES,
    PREFERENCES,
    assert_refused_with_reason,
    make_user,
    put,
    token_header,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


STAFF_DIRECTORY = {"user_type": "staff", "category": "directory"}


async def test_policies_are_staff_only(http):
    _, viewer = await make_user("viewer")
    _, analyst = await make_user("analyst1", analyst=True)
    edit = {"policies": [{"user_type": "anonymous", "category": "directory", "debounce_ms": 5}]}
    for headers in ({}, token_header(viewer), token_header(analyst)):
        for response in (
            await http.get(POLICIES, headers=headers),
            await put(http, POLICIES, edit, headers),
        ):
            assert response.status_code in (401, 403), response.text
            assert response.json()["error"]["code"] in (
                "authentication_required",
                "permission_denied",
            )
    assert await AuditEntry.objects.acount() == 0
    assert not await RefreshPolicy.objects.filter(debounce_ms=5).aexists()


async def test_staff_read_every_policy(http, staff_auth):
    response = await http.get(POLICIES, headers=staff_auth)
    assert response.status_code == 200
    policies = response.json()["policies"]
    assert len(policies) == 16
    assert {(p["user_type"], p["category"]) for p in policies} == {
        (u, c)
        for u in ("anonymous", "registered", "analyst", "staff")
        for c in ("company_metrics", "industry_benchmarks", "directory", "announcements")
    }
    staff = next(p for p in policies if p["user_type"] == "staff")
    assert staff["max_deliveries_per_minute"] == 60000
    assert staff["allowed_transports"] == ["websocket", "sse", "polling"]


async def test_staff_edit_policies_and_every_change_is_audited(http):
    user, key = await make_user("ops", staff=True)
    response = await put(
        http,
        POLICIES,
        {
            "policies": [
                {
                    "user_type": "anonymous",
                    "category": "directory",
                    "min_interval_ms": 10000,
                    "default_interval_ms": 30000,
                    "allowed_transports": ["polling", "websocket"],
                },
                {"user_type": "registered", "category": "announcements", "realtime_allowed": True},
            ]
        },
        token_header(key),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    # The second item changed nothing: not in `changed`, not audited.
    assert body["changed"] == [
        {
            "user_type": "anonymous",
            "category": "directory",
            "min_interval_ms": 10000,
            "default_interval_ms": 30000,
            "max_deliveries_per_minute": 6000,
            "debounce_ms": 0,
            "allowed_transports": ["websocket", "polling"],
            "realtime_allowed": True,
        }
    ]
    row = await RefreshPolicy.objects.aget(user_type="anonymous", category="directory")
    assert row.min_interval_ms == 10000 and row.allowed_transports == ["websocket", "polling"]
    entries = [entry async for entry in AuditEntry.objects.all()]
    assert len(entries) == 1
    entry = entries[0]
    assert entry.action == "policy_edit" and entry.target == "anonymous/directory"
    assert entry.actor_id == user.pk and entry.actor_name == "ops"
    assert entry.details["via"] == "api"
    assert entry.details["before"]["min_interval_ms"] == 0
    assert entry.details["after"]["min_interval_ms"] == 10000
    assert entry.details["changed"] == [
        "allowed_transports",
        "default_interval_ms",
        "min_interval_ms",
    ]
    # The new policy is in force for anonymous clients at once.
    anonymous = (await http.get(PREFERENCES)).json()["policy"]
    directory = anonymous["categories"]["directory"]
    assert (directory["mode"], directory["interval_ms"]) == ("interval", 30000)  # the default
    assert directory["min_interval_ms"] == 10000
    assert anonymous["allowed_transports"] == ["websocket", "polling"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({}, "non_field_errors", "policies"),
        ({"policies": []}, "policies", "1 to 16"),
        ({"policies": [{}] * 17}, "policies", "1 to 16"),
        ({"policies": "all"}, "policies", "1 to 16"),
        ({"policies": [7]}, "policies[0]", "policy object"),
        (
            {"policies": [{"user_type": "robot", "category": "directory", "debounce_ms": 1}]},
            "policies[0].user_type",
            "One of",
        ),
        (
            {"policies": [{"user_type": ["staff"], "category": {"a": 1}, "debounce_ms": 1}]},
            "policies[0].user_type",
            "One of",
        ),
        (
            {"policies": [{"user_type": "staff", "category": "weather", "debounce_ms": 1}]},
            "policies[0].category",
            "One of",
        ),
        (
            {"policies": [{"user_type": "staff", "category": "directory"}]},
            "policies[0]",
            "at least one",
        ),
        (
            {"policies": [{"user_type": "staff", "category": "directory", "colour": "red"}]},
            "policies[0]",
            "Unknown field",
        ),
        (
            {
                "policies": [
                    {"user_type": "staff", "category": "directory", "debounce_ms": 1},
                    {"user_type": "staff", "category": "directory", "debounce_ms": 2},
                ]
            },
            "policies[1]",
            "twice",
        ),
        (
            {"policies": [{"user_type": "staff", "category": "directory", "min_interval_ms": -1}]},
            "policies[0].min_interval_ms",
            "0 to 3600000",
        ),
        (
            {"policies": [{"user_type": "staff", "category": "directory", "min_interval_ms": "5"}]},
            "policies[0].min_interval_ms",
            "integer",
        ),
        (
            {"policies": [{"user_type": "staff", "category": "directory", "debounce_ms": 1.5}]},
            "policies[0].debounce_ms",
            "integer",
        ),
        (
            {
                "policies": [
                    {"user_type": "staff", "category": "directory", "max_deliveries_per_minute": 0}
                ]
            },
            "policies[0].max_deliveries_per_minute",
            "1 to 60000",
        ),
        (
            {"policies": [{"user_type": "staff", "category": "directory", "realtime_allowed": 1}]},
            "policies[0].realtime_allowed",
            "true or false",
        ),
        (
            {"policies": [{**STAFF_DIRECTORY, "allowed_transports": []}]},
            "policies[0].allowed_transports",
            "non-empty",
        ),
        (
            {
                "policies": [
                    {
                        "user_type": "staff",
                        "category": "directory",
                        "allowed_transports": ["sse", "sse"],
                    }
                ]
            },
            "policies[0].allowed_transports",
            "without repeats",
        ),
        (
            {
                "policies": [
                    {"user_type": "staff", "category": "directory", "allowed_transports": ["fax"]}
                ]
            },
            "policies[0].allowed_transports",
            "websocket, sse, polling",
        ),
        (
            {
                "policies": [
                    {
                        "user_type": "staff",
                        "category": "directory",
                        "min_interval_ms": 30000,
                        "default_interval_ms": 10000,
                    }
                ]
            },
            "policies[0].default_interval_ms",
            "At least min_interval_ms",
        ),
        (
            {"policies": [{**STAFF_DIRECTORY, "realtime_allowed": False}]},
            "policies[0].default_interval_ms",
            "needs realtime_allowed",
        ),
    ],
)
async def test_invalid_policy_edits_are_400_with_the_reason(http, staff_auth, body, field, words):
    response = await put(http, POLICIES, body, staff_auth)
    assert_refused_with_reason(response, "invalid_policy", field, words)
    assert await AuditEntry.objects.acount() == 0


async def test_a_policy_edit_is_all_or_nothing(http, staff_auth):
    response = await put(
        http,
        POLICIES,
        {
            "policies": [
                {"user_type": "staff", "category": "directory", "debounce_ms": 100},
                {"user_type": "staff", "category": "announcements", "debounce_ms": 999_999},
            ]
        },
        staff_auth,
    )
    assert response.status_code == 400
    assert not await RefreshPolicy.objects.filter(debounce_ms=100).aexists()


async def test_hostile_policy_bodies_get_clear_errors(http, staff_auth):
    big = json.dumps({"policies": [{"user_type": "staff" * 1000, "category": "x"}] * 10})
    for response, status in (
        (await put(http, POLICIES, big, staff_auth), 413),
        (await put(http, POLICIES, "[" * 3000 + "]" * 3000, staff_auth), 400),
        (await put(http, POLICIES, "nope", staff_auth), 400),
    ):
        assert response.status_code == status
        assert set(response.json()) == {"error"}
