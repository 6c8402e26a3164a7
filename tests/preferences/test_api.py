"""`GET/PUT /api/user/refresh-preferences` and `GET/PUT /api/admin/refresh-policies` on
the real ASGI application, PostgreSQL and Redis: validation with reasons, the policy
bounding preferences, staff only, audited."""

import json

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client

from adminpanel.models import AuditEntry
from preferences.models import CategoryPreference, RefreshPolicy, RefreshPreference
from tests.preferences.conftest import policy_set, token_header, user_with_token
from tests.realtime.conftest import make_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

PREFERENCES = "/api/user/refresh-preferences"
POLICIES = "/api/admin/refresh-policies"
STAFF_DIRECTORY = {"user_type": "staff", "category": "directory"}


@pytest.fixture
async def http():
    async with make_client() as client:
        yield client


async def make_user(username: str, **kwargs) -> tuple:
    return await database_sync_to_async(user_with_token)(username, **kwargs)


@pytest.fixture
async def staff_auth() -> dict:
    """The Authorization header of a staff user, `ops`."""
    _, key = await make_user("ops", staff=True)
    return token_header(key)


async def put(http, path: str, body, headers=None):
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    return await http.put(
        path, content=content, headers={"Content-Type": "application/json", **(headers or {})}
    )


def assert_refused_with_reason(response, code: str, field: str, words: str) -> None:
    """A 400 with error `code` whose detail gives `field` a reason containing `words`."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert words in " ".join(error["detail"][field]), error


# -- preferences -----------------------------------------------------------------------------


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


# -- policies --------------------------------------------------------------------------------


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


# -- the Django admin ------------------------------------------------------------------------


def _admin_client():
    user = get_user_model().objects.create_superuser("root", password="root-pass-1")
    client = Client()
    client.force_login(user)
    return client, user


def test_an_admin_edit_goes_through_the_service_and_is_audited():
    client, user = _admin_client()
    policy_set("registered", "directory")  # the row as seeded
    row = RefreshPolicy.objects.get(user_type="registered", category="directory")
    url = f"/admin/preferences/refreshpolicy/{row.pk}/change/"
    assert client.get(url).status_code == 200
    form = {
        "min_interval_ms": "5000",
        "default_interval_ms": "0",
        "max_deliveries_per_minute": "120",
        "debounce_ms": "200",
        "allowed_transports": ["websocket", "sse"],
        "realtime_allowed": "on",
    }
    response = client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    row.refresh_from_db()
    assert (row.min_interval_ms, row.max_deliveries_per_minute, row.debounce_ms) == (5000, 120, 200)
    assert row.allowed_transports == ["websocket", "sse"]
    entry = AuditEntry.objects.get()
    assert entry.action == "policy_edit" and entry.target == "registered/directory"
    assert entry.details["via"] == "admin" and entry.actor_id == user.pk

    # A rule broken in the form is shown there, nothing saved or audited.
    response = client.post(url, {**form, "default_interval_ms": "1000"})
    assert response.status_code == 200
    assert "At least min_interval_ms" in response.content.decode()
    assert AuditEntry.objects.count() == 1
    # No deleting a policy.
    delete = client.post(f"/admin/preferences/refreshpolicy/{row.pk}/delete/", {"post": "yes"})
    assert delete.status_code == 403


def test_preferences_are_read_only_in_the_admin():
    client, user = _admin_client()
    from preferences.services import refresh_preferences_update

    refresh_preferences_update(user=user, session_key=None, document={"paused": True})
    row = RefreshPreference.objects.get()
    assert client.get("/admin/preferences/refreshpreference/").status_code == 200
    page = client.get(f"/admin/preferences/refreshpreference/{row.pk}/change/")
    assert page.status_code == 200
    change = client.post(f"/admin/preferences/refreshpreference/{row.pk}/change/", {})
    assert change.status_code == 403
    assert client.get("/admin/preferences/refreshpreference/add/").status_code == 403


def test_non_staff_cannot_open_the_policy_admin(regular_user):
    client = Client()
    client.force_login(regular_user)
    response = client.get("/admin/preferences/refreshpolicy/")
    assert response.status_code in (302, 403)
    assert RefreshPolicy.objects.filter(user_type="x").count() == 0


async def test_the_schema_describes_the_endpoints(http):
    schema = (await http.get("/api/schema/", headers={"Accept": "application/json"})).text
    for path in (PREFERENCES, POLICIES):
        assert path in schema
    assert "EffectivePolicy" in schema
