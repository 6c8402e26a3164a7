"""The dashboard data API: filters, ordering, pagination, ETags, visibility and errors."""

import uuid

import pytest

from changes.publisher import change_batch_publish
from emissions.models import EmissionRecord
from tests.factories import (
    CompanyFactory,
    EmissionRecordFactory,
    IndustryBenchmarkFactory,
    IndustryFactory,
)
from tests.offsite import offsite_assets

pytestmark = pytest.mark.django_db


def names(response) -> list[str]:
    return [row["name"] for row in response.json()["results"]]


def all_pages(client, url: str, params: dict) -> list[dict]:
    rows, next_url = [], None
    response = client.get(url, params)
    while True:
        assert response.status_code == 200, response.content
        body = response.json()
        rows.extend(body["results"])
        next_url = body["next"]
        if not next_url:
            return rows
        response = client.get(next_url)


@pytest.fixture
def world():
    steel = IndustryFactory(slug="steel", name="Steel", sector="Materials")
    software = IndustryFactory(slug="software", name="Software", sector="Technology")
    acme = CompanyFactory(name="Acme Steel", country="DE", industry=steel)
    beta = CompanyFactory(
        name="Beta Steel", country="FR", industry=steel, verification_status="pending"
    )
    code = CompanyFactory(name="Codeworks", country="US", industry=software)
    hidden = CompanyFactory(name="Hidden Holdings", country="DE", industry=steel, is_public=False)
    EmissionRecordFactory(company=acme, year=2023, scope1_tonnes=900)
    EmissionRecordFactory(company=acme, year=2024, scope1_tonnes=1000)
    EmissionRecordFactory(company=beta, year=2024, scope1_tonnes=5000)
    EmissionRecordFactory(company=code, year=2024, scope1_tonnes=1)
    EmissionRecordFactory(company=code, year=2023, scope1_tonnes=7, verification_status="rejected")
    EmissionRecordFactory(company=hidden, year=2024, scope1_tonnes=99999)
    IndustryBenchmarkFactory(industry=steel, year=2024)
    change_batch_publish()  # the publisher keeps the companies' latest totals
    return {
        "steel": steel,
        "software": software,
        "acme": acme,
        "beta": beta,
        "code": code,
        "hidden": hidden,
    }


def test_directory_lists_public_companies_by_name(api_client, world):
    response = api_client.get("/api/companies/")
    assert response.status_code == 200
    assert names(response) == ["Acme Steel", "Beta Steel", "Codeworks"]
    first = response.json()["results"][0]
    assert first["industry"] == "steel"
    assert first["latest_year"] == 2024
    assert first["latest_total_tonnes"] == 1075.0


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"industry": "steel"}, ["Acme Steel", "Beta Steel"]),
        ({"industry": "software"}, ["Codeworks"]),
        ({"country": "DE"}, ["Acme Steel"]),
        ({"country": "fr"}, ["Beta Steel"]),
        ({"country": "JP"}, []),
        ({"verification_status": "pending"}, ["Beta Steel"]),
        ({"verification_status": "verified"}, ["Acme Steel", "Codeworks"]),
        ({"search": "steel"}, ["Acme Steel", "Beta Steel"]),
        ({"search": "WORK"}, ["Codeworks"]),
        ({"search": "hidden"}, []),
        ({"industry": "steel", "verification_status": "verified"}, ["Acme Steel"]),
        ({"ordering": "-name"}, ["Codeworks", "Beta Steel", "Acme Steel"]),
        ({"ordering": "-total_emissions"}, ["Beta Steel", "Acme Steel", "Codeworks"]),
        ({"ordering": "total_emissions"}, ["Codeworks", "Acme Steel", "Beta Steel"]),
    ],
)
def test_directory_filters_and_orderings(api_client, world, params, expected):
    response = api_client.get("/api/companies/", params)
    assert response.status_code == 200, response.content
    assert names(response) == expected


def test_companies_without_records_sort_last_by_emissions(api_client, world):
    CompanyFactory(name="Newcomer", industry=world["steel"])
    change_batch_publish()
    response = api_client.get("/api/companies/", {"ordering": "-total_emissions"})
    assert names(response)[-1] == "Newcomer"


def test_fields_selection(api_client, world):
    response = api_client.get("/api/companies/", {"fields": "id,name"})
    assert response.status_code == 200
    assert all(set(row) == {"id", "name"} for row in response.json()["results"])
    detail = api_client.get(f"/api/companies/{world['acme'].id}/", {"fields": "name,emissions"})
    assert set(detail.json()) == {"name", "emissions", "seq", "epoch"}


@pytest.mark.parametrize("ordering", ["name", "-name", "total_emissions", "-total_emissions"])
def test_pagination_walks_every_company_once(api_client, ordering):
    industry = IndustryFactory(slug="cement")
    for index in range(23):
        company = CompanyFactory(name=f"Firm {index % 7}", industry=industry)
        if index % 3:
            EmissionRecordFactory(company=company, scope1_tonnes=index % 5)
    change_batch_publish()
    rows = all_pages(api_client, "/api/companies/", {"ordering": ordering, "page_size": 4})
    assert len(rows) == 23
    assert len({row["id"] for row in rows}) == 23


def test_pagination_is_stable_when_rows_are_added_before_the_cursor(api_client):
    industry = IndustryFactory(slug="cement")
    for index in range(10):
        CompanyFactory(name=f"M{index}", industry=industry)
    first = api_client.get("/api/companies/", {"page_size": 5}).json()
    CompanyFactory(name="A first", industry=industry)
    second = api_client.get(first["next"]).json()
    assert [row["name"] for row in second["results"]] == [f"M{i}" for i in range(5, 10)]


def test_page_size_bounds(api_client, world):
    assert len(api_client.get("/api/companies/", {"page_size": 1}).json()["results"]) == 1
    for bad in ["0", "501", "-3", "many"]:
        response = api_client.get("/api/companies/", {"page_size": bad})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_request"


def test_etag_and_not_modified(api_client, world):
    for url in [
        "/api/companies/",
        f"/api/companies/{world['acme'].id}/",
        "/api/industries/",
        "/api/industries/steel/",
        "/api/overview/",
    ]:
        response = api_client.get(url)
        etag = response.headers["ETag"]
        assert etag
        again = api_client.get(url, HTTP_IF_NONE_MATCH=etag)
        assert again.status_code == 304, url
        assert api_client.get(url, HTTP_IF_NONE_MATCH='"other"').status_code == 200


def test_etag_changes_when_data_changes(api_client, world):
    change_batch_publish()
    etag = api_client.get("/api/overview/").headers["ETag"]
    EmissionRecord.objects.filter(company=world["acme"], year=2024).update(scope1_tonnes=1)
    # The tag is the snapshot's position in the change log: it moves when the change is
    # published (tests/emissions/test_snapshot_etags.py).
    change_batch_publish()
    response = api_client.get("/api/overview/", HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 200
    assert response.headers["ETag"] != etag


def test_company_detail_has_profile_and_visible_years(api_client, world):
    response = api_client.get(f"/api/companies/{world['code'].id}/")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "Codeworks"
    assert [record["year"] for record in body["emissions"]] == [2024]


def test_staff_see_rejected_records_and_hidden_companies(staff_client, world):
    body = staff_client.get(f"/api/companies/{world['code'].id}/").json()
    assert [record["year"] for record in body["emissions"]] == [2023, 2024]
    assert staff_client.get(f"/api/companies/{world['hidden'].id}/").status_code == 200
    listed = names(staff_client.get("/api/companies/"))
    assert "Hidden Holdings" in listed


def test_non_public_company_is_invisible_to_anonymous_and_regular_users(
    api_client, regular_user, world
):
    hidden = world["hidden"]
    for client_user in [None, regular_user]:
        api_client.force_authenticate(client_user)
        response = api_client.get(f"/api/companies/{hidden.id}/")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert "Hidden Holdings" not in names(api_client.get("/api/companies/"))
        overview = api_client.get("/api/overview/").json()
        assert overview["totals"]["companies"] == 3
        assert hidden.id not in {row["id"] for row in overview["top_emitters"]}
        steel = api_client.get("/api/industries/steel/").json()
        assert steel["company_count"] == 2


def test_overview_totals(api_client, staff_client, world):
    body = api_client.get("/api/overview/").json()
    assert body["year"] == 2024
    # 2024: Acme 1075, Beta 5075, Codeworks 76; hidden company excluded.
    assert body["totals"]["total_tonnes"] == 6226.0
    assert body["totals"]["reporting_companies"] == 3
    assert [row["name"] for row in body["top_emitters"]] == [
        "Beta Steel",
        "Acme Steel",
        "Codeworks",
    ]
    by_industry = {row["slug"]: row for row in body["by_industry"]}
    assert by_industry["steel"]["total_tonnes"] == 6150.0
    assert by_industry["software"]["total_tonnes"] == 76.0

    staff = staff_client.get("/api/overview/").json()
    assert staff["totals"]["total_tonnes"] == 6226.0 + 99999 + 75
    assert staff["top_emitters"][0]["name"] == "Hidden Holdings"

    earlier = api_client.get("/api/overview/", {"year": 2023}).json()
    # The rejected 2023 record of Codeworks is not counted for the public.
    assert earlier["totals"]["total_tonnes"] == 975.0


def test_industries_list_and_detail(api_client, world):
    listing = api_client.get("/api/industries/").json()
    assert [(row["slug"], row["company_count"]) for row in listing["results"]] == [
        ("software", 1),
        ("steel", 2),
    ]
    detail = api_client.get("/api/industries/steel/").json()
    assert detail["name"] == "Steel"
    assert [row["year"] for row in detail["totals_by_year"]] == [2023, 2024]
    assert detail["benchmarks"][0]["metric"] == "total_tonnes"
    assert detail["benchmarks"][0]["median"] == 20.0


@pytest.mark.parametrize(
    ("url", "params", "status", "code"),
    [
        ("/api/companies/", {"industry": "no-such-industry"}, 400, "invalid_parameter"),
        ("/api/companies/", {"industry": "Bad Slug!"}, 400, "invalid_request"),
        ("/api/companies/", {"country": "Germany"}, 400, "invalid_request"),
        ("/api/companies/", {"country": "1!"}, 400, "invalid_request"),
        ("/api/companies/", {"verification_status": "approved"}, 400, "invalid_request"),
        ("/api/companies/", {"ordering": "revenue"}, 400, "invalid_request"),
        ("/api/companies/", {"fields": "id,salary"}, 400, "invalid_request"),
        ("/api/companies/", {"fields": ","}, 400, "invalid_request"),
        ("/api/companies/", {"search": "x" * 101}, 400, "invalid_request"),
        ("/api/companies/", {"cursor": "garbage"}, 400, "invalid_parameter"),
        ("/api/companies/", {"cursor": "cD0xMjM="}, 200, None),
        ("/api/companies/", {"colour": "red"}, 400, "invalid_parameter"),
        ("/api/companies/", {"search": "\x00"}, 400, "invalid_request"),
        ("/api/companies/00000000-0000-0000-0000-000000000000/", {}, 404, "not_found"),
        ("/api/companies/not-a-uuid/", {}, 404, "not_found"),
        ("/api/companies/{acme}/", {"fields": "nope"}, 400, "invalid_request"),
        ("/api/industries/", {"page_size": "x"}, 400, "invalid_request"),
        ("/api/industries/unknown/", {}, 404, "not_found"),
        ("/api/industries/steel/", {"year": "2024"}, 400, "invalid_parameter"),
        ("/api/overview/", {"year": "last"}, 400, "invalid_request"),
        ("/api/overview/", {"year": "1200"}, 400, "invalid_request"),
        ("/api/overview/", {"year": "99999999999999999999"}, 400, "invalid_request"),
        ("/api/nothing-here/", {}, 404, "not_found"),
    ],
)
def test_malformed_requests_get_json_errors(api_client, world, url, params, status, code):
    response = api_client.get(url.format(acme=world["acme"].id), params)
    assert response.status_code == status, response.content
    if code:
        assert response["Content-Type"].startswith("application/json")
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["detail"]


def test_writes_are_refused(api_client, world):
    response = api_client.post("/api/companies/", {"name": "x"}, format="json")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_unknown_company_id_is_404_not_500(api_client, db):
    response = api_client.get(f"/api/companies/{uuid.uuid4()}/")
    assert response.status_code == 404


def test_openapi_schema_and_docs(api_client, db):
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert b"/api/companies/" in schema.content
    docs = api_client.get("/api/docs/")
    assert docs.status_code == 200
    assert "/static/" in docs.content.decode()
    assert offsite_assets(docs.content.decode()) == []


def test_responses_carry_the_change_seq_they_are_consistent_with(api_client, world):
    from changes.selectors import change_log_state

    change_batch_publish()
    head = change_log_state()
    for url in [
        "/api/companies/",
        "/api/industries/",
        "/api/industries/steel/",
        "/api/overview/",
        f"/api/companies/{world['acme'].id}/",
    ]:
        response = api_client.get(url)
        assert response.headers["X-Change-Seq"] == str(head.head_seq)
        assert response.headers["X-Change-Epoch"] == head.epoch
        assert response.json()["seq"] == head.head_seq
        assert response.json()["epoch"] == head.epoch


def test_openapi_schema_generates_without_errors_or_warnings(tmp_path, db):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yml"))
    schema = (tmp_path / "s.yml").read_text()
    for path in (
        "/api/overview/",
        "/api/industries/{slug}/",
        "/api/realtime/health",
        "/api/updates/status",
        "/api/realtime/subscribe",
        "/api/updates/acknowledge",
    ):
        assert path in schema
