"""Shared fixtures. Every test talks to the real PostgreSQL and Redis."""

import pytest
from django.contrib.auth import get_user_model


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
