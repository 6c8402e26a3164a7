"""Conditional requests on the dashboard snapshots: the tag follows from the change-log
position, the audience, the query and the uncaptured rows, and a matching If-None-Match
is answered 304 before any of the body's queries; HEAD carries GET's tag."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from changes.publisher import change_batch_publish
from emissions.models import EmissionRecord, Industry
from emissions.snapshot_etags import etag_matches

pytestmark = pytest.mark.django_db


def snapshot_urls(world) -> list[str]:
    return [
        "/api/companies/",
        "/api/companies/?industry=steel&ordering=-total_emissions",
        f"/api/companies/{world['acme']}/",
        "/api/industries/",
        "/api/industries/steel/",
        "/api/overview/",
        "/api/overview/?year=2024",
        "/api/overview/changes/",
    ]


def test_a_matching_tag_is_answered_before_the_body_is_read(api_client, world):
    change_batch_publish()
    for url in snapshot_urls(world):
        full = api_client.get(url)
        assert full.status_code == 200, url
        with CaptureQueriesContext(connection) as built:
            api_client.get(url)
        with CaptureQueriesContext(connection) as answered:
            again = api_client.get(url, HTTP_IF_NONE_MATCH=full.headers["ETag"])
        assert again.status_code == 304, url
        assert again.content == b""
        assert again.headers["ETag"] == full.headers["ETag"]
        assert again.headers["X-Change-Seq"] == full.headers["X-Change-Seq"]
        # The log's state and the industries' fingerprint, nothing of the body.
        assert len(answered) == 2, (url, [q["sql"] for q in answered])
        assert len(built) > len(answered), url


def test_head_carries_the_tag_of_get(api_client, world):
    for url in snapshot_urls(world):
        get = api_client.get(url)
        head = api_client.head(url)
        assert head.status_code == 200 and head.content == b"", url
        assert head.headers["ETag"] == get.headers["ETag"], url
        assert api_client.head(url, HTTP_IF_NONE_MATCH=get.headers["ETag"]).status_code == 304


def test_the_tag_names_the_audience_and_the_query(api_client, staff_client, world):
    public = api_client.get("/api/overview/").headers["ETag"]
    staff = staff_client.get("/api/overview/").headers["ETag"]
    assert public != staff
    # A staff tag does not validate the public body, nor the reverse.
    assert api_client.get("/api/overview/", HTTP_IF_NONE_MATCH=staff).status_code == 200
    assert staff_client.get("/api/overview/", HTTP_IF_NONE_MATCH=public).status_code == 200
    by_year = api_client.get("/api/overview/?year=2024").headers["ETag"]
    assert by_year != public
    # The order of the query's parameters is not part of what is shown.
    one = api_client.get("/api/companies/?industry=steel&ordering=name").headers["ETag"]
    other = api_client.get("/api/companies/?ordering=name&industry=steel").headers["ETag"]
    assert one == other


def test_the_tag_moves_with_a_published_change_and_an_industry_edit(api_client, world):
    change_batch_publish()
    first = api_client.get("/api/industries/steel/").headers["ETag"]
    EmissionRecord.objects.filter(company=world["acme"], year=2024).update(scope1_tonnes=7)
    change_batch_publish()
    second = api_client.get("/api/industries/steel/", HTTP_IF_NONE_MATCH=first)
    assert second.status_code == 200 and second.headers["ETag"] != first
    # Industries have no capture trigger: their rows are part of the tag instead.
    Industry.objects.filter(slug="steel").update(name="Steel and Iron")
    third = api_client.get("/api/industries/steel/", HTTP_IF_NONE_MATCH=second.headers["ETag"])
    assert third.status_code == 200
    assert third.json()["name"] == "Steel and Iron"


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ('"a.1.x"', True),
        ('W/"a.1.x"', True),
        ('"other", "a.1.x"', True),
        ("*", True),
        ('"a.1.y"', False),
        ("", False),
        ("garbage without quotes", False),
        ('"' + "x" * 10_000 + '"', False),
    ],
)
def test_if_none_match_parsing(header, matches):
    assert etag_matches(header, '"a.1.x"') is matches


def test_hostile_if_none_match_headers_get_the_body(api_client, world):
    for header in ["*garbage", '"unterminated', "W/", "\x00\x01", '"x",' * 2000]:
        response = api_client.get("/api/overview/", HTTP_IF_NONE_MATCH=header)
        assert response.status_code == 200, header
        assert response.json()["seq"] >= 0
