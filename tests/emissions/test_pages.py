"""The server-rendered overview page, the admin and the operational endpoints."""

import pytest

from tests.factories import CompanyFactory, EmissionRecordFactory, IndustryFactory

pytestmark = pytest.mark.django_db


def test_overview_page_shows_totals_industries_and_top_emitters(client):
    steel = IndustryFactory(slug="steel", name="Steel")
    big = CompanyFactory(name="Big Steel", industry=steel)
    EmissionRecordFactory(company=big, scope1_tonnes=123456)
    hidden = CompanyFactory(name="Secret Steel", industry=steel, is_public=False)
    EmissionRecordFactory(company=hidden, scope1_tonnes=999999)

    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Big Steel" in html
    assert "Steel" in html
    assert "123,531" in html  # 123456 + 50 + 25, formatted
    assert "Secret Steel" not in html
    assert response.headers["ETag"]


def test_overview_page_with_an_empty_database(client):
    response = client.get("/")
    assert response.status_code == 200
    assert "No emission data yet." in response.content.decode()


def test_metrics_endpoint_exposes_prometheus_metrics(client):
    client.get("/api/overview/")
    response = client.get("/metrics")
    assert response.status_code == 200
    body = response.content.decode()
    assert "django_http_requests_total_by_view_transport_method_total" in body
    assert "django_db_execute_total" in body


def test_admin_requires_staff(client, regular_user, staff_user):
    assert client.get("/admin/emissions/company/").status_code == 302
    client.force_login(regular_user)
    assert client.get("/admin/emissions/company/").status_code == 302
    client.force_login(staff_user)
    staff_user.is_superuser = True
    staff_user.save()
    CompanyFactory(name="Visible In Admin")
    response = client.get("/admin/emissions/company/")
    assert response.status_code == 200
    assert "Visible In Admin" in response.content.decode()


@pytest.mark.asyncio
async def test_static_files_are_served_by_the_asgi_application():
    import httpx

    from config.asgi import application

    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/static/css/site.css")
        assert response.status_code == 200
        assert "--accent" in response.text
        assert (await client.get("/static/nope.css")).status_code == 404
