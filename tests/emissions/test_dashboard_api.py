"""The API additions the dashboard pages use: the recent-changes feed
(`/api/overview/changes/`), the record behind each top emitter, and the directory's
newest-first ordering."""

import pytest

from changes.publisher import change_batch_publish
from tests.factories import CompanyFactory, EmissionRecordFactory, IndustryFactory
from tests.helpers import sql

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    steel = IndustryFactory(slug="steel", name="Steel", sector="Materials")
    acme = CompanyFactory(name="Acme Steel", country="DE", industry=steel)
    hidden = CompanyFactory(name="Hidden Holdings", country="DE", industry=steel, is_public=False)
    record = EmissionRecordFactory(company=acme, year=2024, scope1_tonnes=1000)
    EmissionRecordFactory(company=hidden, year=2024, scope1_tonnes=99999)
    change_batch_publish()
    return {"steel": steel, "acme": acme, "hidden": hidden, "record": record}


def publish_news(world) -> None:
    """A major move of Acme's total, a new public company and a new hidden one."""
    sql("UPDATE emission_records SET scope1_tonnes = 5000 WHERE id = %s", [world["record"].id])
    sql(
        "INSERT INTO companies (name, country, industry_id, is_public) VALUES"
        " ('Newco', 'SE', %s, true), ('Secret Newco', 'SE', %s, false)",
        [world["steel"].id, world["steel"].id],
    )
    change_batch_publish()


def test_recent_changes_are_the_overview_news_newest_first(api_client, world):
    publish_news(world)
    response = api_client.get("/api/overview/changes/")
    assert response.status_code == 200
    body = response.json()
    items = body["changes"]
    assert [item["seq"] for item in items] == sorted((item["seq"] for item in items), reverse=True)
    assert all(item["entity"] != "aggregate" for item in items)
    assert all(item["context"] == "overview" for item in items)
    inserted = [item for item in items if item["entity"] == "company"]
    # Newest first: the companies of this test, then those of the fixture.
    assert [item["fields"]["name"] for item in inserted] == ["Newco", "Acme Steel"]
    moved = next(item for item in items if item["entity"] == "emission_record")
    assert moved["fields"]["company_id"] == str(world["acme"].id)
    assert moved["previous"]["total_tonnes"] < moved["fields"]["total_tonnes"]
    assert moved["significance"] in ("major", "critical")
    # Names of the companies the items concern, for a feed that shows names.
    assert body["companies"][str(world["acme"].id)]["name"] == "Acme Steel"
    assert body["seq"] == int(response.headers["X-Change-Seq"])
    assert max(item["seq"] for item in items) <= body["seq"]


def test_recent_changes_follow_the_audience(api_client, staff_client, world):
    publish_news(world)
    public = api_client.get("/api/overview/changes/").json()
    assert "Secret Newco" not in str(public)
    assert str(world["hidden"].id) not in public["companies"]
    staff = staff_client.get("/api/overview/changes/").json()
    assert "Secret Newco" in [item["fields"].get("name") for item in staff["changes"]]


def test_recent_changes_limit(api_client, world):
    publish_news(world)
    body = api_client.get("/api/overview/changes/", {"limit": 1}).json()
    assert len(body["changes"]) == 1
    assert api_client.get("/api/overview/changes/", {"limit": 50}).status_code == 200


def test_recent_changes_of_an_empty_log(api_client, db):
    body = api_client.get("/api/overview/changes/").json()
    assert body["changes"] == []
    assert body["companies"] == {}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": "0"}, "invalid_request"),
        ({"limit": "51"}, "invalid_request"),
        ({"limit": "-1"}, "invalid_request"),
        ({"limit": "ten"}, "invalid_request"),
        ({"limit": "9" * 40}, "invalid_request"),
        ({"limit": "\x00"}, "invalid_request"),
        ({"context": "company:x"}, "invalid_parameter"),
        ({"since": "1"}, "invalid_parameter"),
    ],
)
def test_recent_changes_refuse_malformed_queries(api_client, world, params, code):
    response = api_client.get("/api/overview/changes/", params)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["detail"]


def test_recent_changes_refuse_writes(api_client, world):
    response = api_client.post("/api/overview/changes/", {"limit": 1}, format="json")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_top_emitters_name_the_record_behind_each_row(api_client, world):
    top = api_client.get("/api/overview/").json()["top_emitters"]
    assert [(row["name"], row["record_id"]) for row in top] == [
        ("Acme Steel", str(world["record"].id))
    ]


def test_the_directory_orders_newest_first(api_client, world):
    sql(
        "INSERT INTO companies (name, country, industry_id, created_at) VALUES"
        " ('Oldest', 'SE', %s, now() - interval '2 days'),"
        " ('Newest', 'SE', %s, now() + interval '1 day')",
        [world["steel"].id, world["steel"].id],
    )
    response = api_client.get("/api/companies/", {"ordering": "-created_at", "page_size": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["results"][0]["name"] == "Newest"
    rows = body["results"]
    while body["next"]:
        body = api_client.get(body["next"]).json()
        rows.extend(body["results"])
    assert [row["name"] for row in rows][-1] == "Oldest"
    assert len(rows) == 3  # every public company once
