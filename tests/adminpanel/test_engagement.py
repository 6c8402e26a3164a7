"""`POST /api/engagement/events`: validation, who is counted, the per-client rate limit,
hostile input."""

import json
import random

import pytest
from rest_framework.test import APIClient

from adminpanel.models import EngagementEvent

URL = "/api/engagement/events"


def address() -> str:
    """An address of this test alone: the limit is per client, in the run's Redis."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def post(client, body, *, raw: bool = False, remote: str | None = None, **extra):
    data = body if raw else json.dumps(body)
    extra.setdefault("content_type", "application/json")
    return client.post(URL, data, REMOTE_ADDR=remote or address(), **extra)


@pytest.mark.django_db
def test_events_are_stored_for_the_client(api_client, regular_user):
    remote = address()
    response = post(
        api_client,
        {
            "events": [
                {"kind": "pause", "context": "overview", "transport": "websocket"},
                {"kind": "resume"},
                {"kind": "manual_refresh", "context": "industry:steel"},
                {"kind": "notification_opened", "notification": "maintenance-window-3"},
                {"kind": "transport_fallback", "from_transport": "websocket", "transport": "sse"},
            ]
        },
        remote=remote,
    )
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 5}
    rows = list(EngagementEvent.objects.order_by("id").values_list("kind", "client"))
    assert [kind for kind, _ in rows] == [
        "pause",
        "resume",
        "manual_refresh",
        "notification_opened",
        "transport_fallback",
    ]
    assert {client for _, client in rows} == {f"addr:{remote}"}
    fallback = EngagementEvent.objects.get(kind="transport_fallback")
    assert (fallback.from_transport, fallback.transport) == ("websocket", "sse")

    signed_in = APIClient()
    signed_in.force_authenticate(regular_user)
    assert post(signed_in, {"events": [{"kind": "pause"}]}).status_code == 202
    assert EngagementEvent.objects.filter(client=f"user:{regular_user.pk}").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"events": []},
        {"events": "pause"},
        {"events": [{"kind": "pause"}] * 21},
        {"events": [{}]},
        {"events": [{"kind": "sleep"}]},
        {"events": [{"kind": 5}]},
        {"events": [{"kind": ["pause"]}]},
        {"events": [["pause"]]},
        {"events": [{"kind": "pause", "context": "company:not-a-uuid"}]},
        {"events": [{"kind": "pause", "context": 7}]},
        {"events": [{"kind": "pause", "context": "x" * 101}]},
        {"events": [{"kind": "pause", "context": "overview\x00"}]},
        {"events": [{"kind": "pause", "context": "\ud800"}]},
        {"events": [{"kind": "pause", "transport": "carrier-pigeon"}]},
        {"events": [{"kind": "pause", "from_transport": "websocket"}]},
        {"events": [{"kind": "transport_fallback", "transport": "sse"}]},
        {"events": [{"kind": "transport_fallback", "transport": "sse", "from_transport": "sse"}]},
        {"events": [{"kind": "notification_opened"}]},
        {"events": [{"kind": "notification_opened", "notification": "<script>"}]},
        {"events": [{"kind": "pause", "notification": "n1"}]},
        {"events": [{"kind": "pause", "at": "2026-01-01T00:00:00Z"}]},
        {"events": [{"kind": "pause"}], "extra": True},
        [{"kind": "pause"}],
        None,
    ],
)
def test_invalid_reports_are_400_and_store_nothing(api_client, body):
    response = post(api_client, body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] in ("invalid_request", "malformed_request")
    assert not EngagementEvent.objects.exists()


@pytest.mark.django_db
def test_malformed_oversized_and_wrong_media(api_client):
    assert post(api_client, "{nope", raw=True).status_code == 400
    assert post(api_client, "kind=pause", raw=True, content_type="text/plain").status_code == 415
    huge = json.dumps({"events": [{"kind": "pause", "context": "overview"}] * 5000})
    assert post(api_client, huge, raw=True).status_code == 413
    nested = "[" * 30_000 + "]" * 30_000
    assert post(api_client, nested, raw=True).status_code in (400, 413)
    assert api_client.get(URL, REMOTE_ADDR=address()).status_code == 405
    assert not EngagementEvent.objects.exists()


@pytest.mark.django_db
def test_the_rate_limit_is_per_client_with_retry_after(api_client, settings):
    settings.ENGAGEMENT_RATE = "3/hour"  # no window boundary inside the test
    remote, other = address(), address()
    body = {"events": [{"kind": "manual_refresh"}]}
    for _ in range(3):
        assert post(api_client, body, remote=remote).status_code == 202
    refused = post(api_client, body, remote=remote)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert 1 <= int(refused["Retry-After"]) <= 3600
    # Invalid reports count too: a flood of garbage is cut off the same way.
    assert post(api_client, {"events": "x"}, remote=remote).status_code == 429
    assert post(api_client, body, remote=other).status_code == 202
    assert EngagementEvent.objects.count() == 4
