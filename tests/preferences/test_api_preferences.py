"""`GET/PUT /api/user/refresh-preferences` on the real ASGI application, PostgreSQL and
Redis: anonymous sessions and signed-in users, the policy bounding preferences, and
validation with reasons."""

import json

import pytest
from channels.db import database_sync_to_async

from preferences.models import CategoryPreference, RefreshPreference
from tests.preferences.conftest import (
    POLICIES,
    PREFERENCES,
    assert_refused_with_reason,
    make_user,
    policy_set,
    put,
    token_header,
)
from tests.realtime.conftest import make_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def test_anonymous_get_gives_the_defaults_without_creating_a_session(http):
    response = await http.get(PREFERENCES)
    assert response.status_code == 200
    assert "sessionid" not in response.cookies
    body = response.json()
    assert body["categories"] == {
        name: {"mode": "default"}
        for name in ("company_metrics", "industry_benchmarks", "directory", "announcements")
    }
    assert body["paused"] is False and body["notification_threshold"] == "major"
    assert body["quiet_hours"] is None
    assert body["policy"]["user_type"] == "anonymous"
    assert body["policy"]["categories"]["directory"]["mode"] == "realtime"


async def test_anonymous_put_creates_the_session_and_its_cookie(http):
    response = await put(
        http,
        PREFERENCES,
        {"categories": {"directory": {"mode": "1m"}}, "notification_threshold": "none"},
    )
    assert response.status_code == 200, response.text
    session = response.cookies["sessionid"]
    body = response.json()
    assert body["categories"]["directory"] == {"mode": "1m"}
    assert body["policy"]["categories"]["directory"]["interval_ms"] == 60000
    row = await RefreshPreference.objects.aget(session_id=session)
    assert row.user_id is None and row.notification_threshold == "none"

    # The cookie is the client: the same preferences come back, and a later PUT changes
    # only what it names.
    again = await put(http, PREFERENCES, {"paused": True})
    assert again.status_code == 200
    assert again.json()["categories"]["directory"] == {"mode": "1m"}
    assert again.json()["paused"] is True
    assert await RefreshPreference.objects.acount() == 1
    async with make_client() as stranger:
        assert (await stranger.get(PREFERENCES)).json()["paused"] is False


async def test_a_refused_put_creates_no_session(http):
    response = await put(http, PREFERENCES, {"categories": {"weather": {"mode": "1m"}}})
    assert response.status_code == 400
    assert "sessionid" not in response.cookies
    assert await RefreshPreference.objects.acount() == 0


async def test_signed_in_users_keep_their_own_preferences(http):
    _, alice = await make_user("alice")
    _, bob = await make_user("bob")
    document = {
        "categories": {"company_metrics": {"mode": "30s"}, "announcements": {"mode": "manual"}},
        "quiet_hours": {"start": "22:00", "end": "07:30", "timezone": "America/New_York"},
    }
    response = await put(http, PREFERENCES, document, token_header(alice))
    assert response.status_code == 200, response.text
    body = (await http.get(PREFERENCES, headers=token_header(alice))).json()
    assert body["categories"]["company_metrics"] == {"mode": "30s"}
    assert body["categories"]["announcements"] == {"mode": "manual"}
    assert body["quiet_hours"] == document["quiet_hours"]
    assert body["policy"]["user_type"] == "registered"
    assert body["policy"]["quiet_hours"] == document["quiet_hours"]
    other = (await http.get(PREFERENCES, headers=token_header(bob))).json()
    assert other["categories"]["company_metrics"] == {"mode": "default"}

    # `default` forgets a choice; null clears the quiet hours.
    response = await put(
        http,
        PREFERENCES,
        {"categories": {"company_metrics": {"mode": "default"}}, "quiet_hours": None},
        token_header(alice),
    )
    body = response.json()
    assert body["categories"]["company_metrics"] == {"mode": "default"}
    assert body["quiet_hours"] is None
    assert await CategoryPreference.objects.acount() == 1


async def test_preferences_are_bounded_by_the_policy(http):
    _, key = await make_user("carol")
    await database_sync_to_async(policy_set)(
        "registered", "company_metrics", min_interval_ms=30000, default_interval_ms=30000
    )
    await database_sync_to_async(policy_set)(
        "registered", "industry_benchmarks", realtime_allowed=False, default_interval_ms=60000
    )
    response = await put(
        http,
        PREFERENCES,
        {
            "categories": {
                "company_metrics": {"mode": "10s"},
                "industry_benchmarks": {"mode": "realtime"},
            }
        },
        token_header(key),
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_preferences"
    assert "minimum interval" in error["detail"]["categories.company_metrics.mode"][0]
    assert "30000 ms" in error["detail"]["categories.company_metrics.mode"][0]
    assert "Real time is not allowed" in error["detail"]["categories.industry_benchmarks.mode"][0]
    # What the policy allows is accepted; an analyst is another user type, not bound.
    ok = await put(
        http,
        PREFERENCES,
        {"categories": {"company_metrics": {"mode": "30s"}, "industry_benchmarks": {"mode": "5m"}}},
        token_header(key),
    )
    assert ok.status_code == 200, ok.text
    _, analyst = await make_user("dave", analyst=True)
    ten_seconds = {"categories": {"company_metrics": {"mode": "10s"}}}
    ok = await put(http, PREFERENCES, ten_seconds, token_header(analyst))
    assert ok.status_code == 200 and ok.json()["policy"]["user_type"] == "analyst"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"categories": {"weather": {"mode": "1m"}}}, "categories.weather", "Unknown category"),
        ({"categories": {"directory": {"mode": "7s"}}}, "categories.directory.mode", "One of"),
        ({"categories": {"directory": {"mode": 10}}}, "categories.directory.mode", "One of"),
        ({"categories": {"directory": "1m"}}, "categories.directory", "exactly one key"),
        ({"categories": {"directory": {"mode": "1m", "x": 1}}}, "categories.directory", "one key"),
        ({"categories": ["directory"]}, "categories", "An object"),
        ({"paused": "yes"}, "paused", "true or false"),
        ({"paused": 1}, "paused", "true or false"),
        ({"notification_threshold": "loud"}, "notification_threshold", "One of"),
        ({"notification_threshold": None}, "notification_threshold", "One of"),
        ({"quiet_hours": "22-07"}, "quiet_hours", "HH:MM"),
        ({"quiet_hours": {"start": "22:00", "end": "07:00"}}, "quiet_hours", "HH:MM"),
        (
            {"quiet_hours": {"start": "24:00", "end": "07:00", "timezone": "UTC"}},
            "quiet_hours.start",
            "00:00 to 23:59",
        ),
        (
            {"quiet_hours": {"start": "22:00", "end": 7, "timezone": "UTC"}},
            "quiet_hours.end",
            "HH:MM",
        ),
        (
            {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Mars/Olympus"}},
            "quiet_hours.timezone",
            "IANA",
        ),
        (
            {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "../../etc/passwd"}},
            "quiet_hours.timezone",
            "IANA",
        ),
        (
            {"quiet_hours": {"start": "08:00", "end": "08:00", "timezone": "UTC"}},
            "quiet_hours",
            "differ",
        ),
        ({"colour": "blue"}, "non_field_errors", "Unknown field"),
        (["paused"], "non_field_errors", "JSON object"),
        ('"just a string"', "non_field_errors", "JSON object"),
    ],
)
async def test_invalid_preferences_are_400_with_the_reason(http, body, field, words):
    _, key = await make_user("erin")
    response = await put(http, PREFERENCES, body, token_header(key))
    assert_refused_with_reason(response, "invalid_preferences", field, words)
    assert await RefreshPreference.objects.acount() == 0


async def test_every_problem_is_named_at_once(http):
    _, key = await make_user("fay")
    response = await put(
        http,
        PREFERENCES,
        {"categories": {"weather": {"mode": "1m"}}, "paused": "no", "notification_threshold": 3},
        token_header(key),
    )
    assert set(response.json()["error"]["detail"]) == {
        "categories.weather",
        "paused",
        "notification_threshold",
    }


async def test_hostile_bodies_get_clear_errors(http):
    _, key = await make_user("gus")
    auth = token_header(key)
    oversized = json.dumps({"categories": {f"c{n}": {"mode": "1m"} for n in range(2000)}})
    cases = [
        (await put(http, PREFERENCES, oversized, auth), 413, "payload_too_large"),
        (await put(http, PREFERENCES, "[" * 5000 + "]" * 5000, auth), 400, "malformed_request"),
        (await put(http, PREFERENCES, "{not json", auth), 400, "malformed_request"),
        (await put(http, PREFERENCES, b"\xff\xfe\x00", auth), 400, "malformed_request"),
        (await put(http, PREFERENCES, '{"paused": NaN}', auth), 400, "invalid_preferences"),
        (
            await http.put(
                PREFERENCES,
                content="paused=true",
                headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
            ),
            415,
            "unsupported_media_type",
        ),
        (await http.post(PREFERENCES, json={}, headers=auth), 405, "method_not_allowed"),
        (await http.get(PREFERENCES, headers={"Authorization": "Token nope"}), 403, None),
    ]
    for response, status, code in cases:
        # DRF answers a bad token with 403 here (session authentication comes first).
        assert response.status_code == status, (status, response.text)
        body = response.json()
        assert set(body) == {"error"}
        if code:
            assert body["error"]["code"] == code
    # A deep but small body is refused, not a server error.
    deep = '{"categories": ' + '{"a": ' * 2000 + "1" + "}" * 2000 + "}"
    response = await put(http, PREFERENCES, deep, auth)
    assert response.status_code == 400
    assert await RefreshPreference.objects.acount() == 0


async def test_the_schema_describes_the_endpoints(http):
    schema = (await http.get("/api/schema/", headers={"Accept": "application/json"})).text
    for path in (PREFERENCES, POLICIES):
        assert path in schema
    assert "EffectivePolicy" in schema
