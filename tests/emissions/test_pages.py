"""The server-rendered page shells, the admin and the operational endpoints."""

import uuid

import pytest
from django.templatetags.static import static

from tests.factories import CompanyFactory, EmissionRecordFactory, IndustryFactory
from tests.offsite import offsite_assets

pytestmark = pytest.mark.django_db


def test_overview_page_is_a_shell_for_the_live_client(client):
    steel = IndustryFactory(slug="steel", name="Steel")
    big = CompanyFactory(name="Big Steel", industry=steel)
    EmissionRecordFactory(company=big, scope1_tonnes=123456)
    hidden = CompanyFactory(name="Secret Steel", industry=steel, is_public=False)
    EmissionRecordFactory(company=hidden, scope1_tonnes=999999)

    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    # Live data comes from the client; the shell has the panels, their freshness lines,
    # the connection indicator in its first state, and skeletons of the rows' height.
    assert 'data-live-state="connecting"' in html
    assert 'data-page="overview"' in html
    for panel in ("totals", "industries", "top-emitters", "movers", "newest", "feed"):
        assert f'data-panel="{panel}"' in html
        assert f'data-freshness="{panel}"' in html
    assert 'class="skeleton"' in html
    # Under its hashed name with DEBUG off (tests/static/ checks the names).
    assert static("js/pages/overview.js") in html
    assert "Secret Steel" not in html
    assert response.headers["ETag"]


def test_pages_load_no_script_or_style_from_elsewhere(client, staff_user):
    industry = IndustryFactory(slug="steel")
    company = CompanyFactory(industry=industry)
    for path in ("/", "/companies/", f"/companies/{company.id}/", "/industries/steel/"):
        html = client.get(path).content.decode()
        assert offsite_assets(html) == [], path
        assert "http://" not in html and "https://" not in html, path


def test_directory_page_lists_the_filters(client):
    IndustryFactory(slug="steel", name="Steel")
    IndustryFactory(slug="software", name="Software")
    response = client.get("/companies/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<option value="steel">Steel</option>' in html
    assert '<option value="-total_emissions">' in html
    assert 'id="industry-names"' in html  # slug -> name for the client
    assert 'data-table="directory"' in html


def test_company_page_shows_the_visible_company_and_404s_otherwise(client, staff_user):
    steel = IndustryFactory(slug="steel", name="Steel")
    acme = CompanyFactory(name="Acme <Steel>", industry=steel)
    hidden = CompanyFactory(name="Secret Steel", industry=steel, is_public=False)

    response = client.get(f"/companies/{acme.id}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Acme &lt;Steel&gt;" in html and "Acme <Steel>" not in html
    assert f'data-company="{acme.id}"' in html
    assert 'data-industry="steel"' in html

    assert client.get(f"/companies/{hidden.id}/").status_code == 404
    assert client.get(f"/companies/{uuid.uuid4()}/").status_code == 404
    assert client.get("/companies/not-a-uuid/").status_code == 404
    client.force_login(staff_user)
    assert client.get(f"/companies/{hidden.id}/").status_code == 200


def test_industry_page_and_unknown_industries(client):
    IndustryFactory(slug="steel", name="Steel", sector="Materials")
    response = client.get("/industries/steel/")
    assert response.status_code == 200
    assert 'data-industry="steel"' in response.content.decode()
    assert client.get("/industries/no-such-thing/").status_code == 404
    assert client.get("/industries/Bad Slug!/").status_code == 404


def test_pages_refuse_writes_without_a_500(client):
    IndustryFactory(slug="steel")
    for path in ("/", "/companies/", "/industries/steel/"):
        assert client.post(path).status_code in (403, 405)


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
    assert client.get("/admin/emissions/company/").status_code == 403
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
