"""Every Django admin page: 403 for signed-in users who are not staff, the login page for
visitors, the page for staff."""

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db


def admin_pages() -> list[str]:
    pages = [reverse("admin:index"), reverse("admin-monitor")]
    for model in admin.site._registry:
        meta = model._meta
        pages.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
    return pages


def test_non_staff_get_403_on_every_admin_page(regular_user):
    client = Client()
    client.force_login(regular_user)
    for page in admin_pages():
        assert client.get(page).status_code == 403, page


def test_visitors_are_sent_to_the_login_page_which_stays_open():
    client = Client()
    for page in admin_pages():
        response = client.get(page)
        assert response.status_code == 302, page
        assert response["Location"].startswith(reverse("admin:login")), page
    assert client.get(reverse("admin:login")).status_code == 200


def test_a_non_staff_user_can_still_reach_login_and_logout(regular_user):
    client = Client()
    client.force_login(regular_user)
    assert client.get(reverse("admin:login")).status_code == 200
    assert client.post(reverse("admin:logout")).status_code in (200, 302)


def test_staff_see_every_admin_page(staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client = Client()
    client.force_login(staff_user)
    for page in admin_pages():
        # The maintenance switch's list goes straight to its one row.
        response = client.get(page, follow=True)
        assert response.status_code == 200, page
