"""Shared fixtures. Every test talks to the real PostgreSQL and Redis."""

import os

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from tests.helpers import sql
from tests.static.collected import REPO, collected_static_root


def static_root_for_tests() -> None:
    """Tests run with DEBUG off: pages name hashed static files, and config/asgi.py and the
    web servers that tests start serve them from STATIC_ROOT (tests/static/collected.py).
    Run as this module loads: before the other conftests, which import config/asgi.py."""
    root = collected_static_root(REPO / ".data" / "staticfiles-test")
    os.environ["STATIC_ROOT"] = str(root)  # for the processes tests start
    override_settings(STATIC_ROOT=root).enable()


static_root_for_tests()


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_user(
        username="staff", password="staff-password-1", is_staff=True
    )


@pytest.fixture
def regular_user(db):
    return get_user_model().objects.create_user(username="viewer", password="viewer-password-1")


@pytest.fixture
def staff_client(staff_user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(staff_user)
    return client


@pytest.fixture
def world(db):
    """Two industries, three companies (one not public), records for 2023 and 2024."""
    steel, software = sql(
        "INSERT INTO industries (slug, name, sector) VALUES ('steel', 'Steel', 'Materials'),"
        " ('software', 'Software', 'Technology') RETURNING id"
    )
    steel, software = steel[0], software[0]
    acme, beta, hidden = (
        row[0]
        for row in sql(
            "INSERT INTO companies (name, country, industry_id, is_public, verification_status)"
            " VALUES ('Acme Steel', 'DE', %s, true, 'verified'),"
            " ('Beta Soft', 'FR', %s, true, 'pending'),"
            " ('Hidden Steel', 'DE', %s, false, 'verified') RETURNING id",
            [steel, software, steel],
        )
    )
    sql(
        "INSERT INTO emission_records (company_id, year, scope1_tonnes, scope2_tonnes,"
        " scope3_tonnes, verification_status) VALUES"
        " (%s, 2023, 100, 10, 1, 'verified'), (%s, 2024, 200, 20, 2, 'verified'),"
        " (%s, 2024, 50, 5, 0, 'pending'), (%s, 2024, 999, 0, 0, 'verified')",
        [acme, acme, beta, hidden],
    )
    return {
        "steel": steel,
        "software": software,
        "acme": acme,
        "beta": beta,
        "hidden": hidden,
    }
