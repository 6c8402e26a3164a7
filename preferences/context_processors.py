"""What every page's refresh settings form offers (templates/base.html)."""

from __future__ import annotations

from django.http import HttpRequest

from preferences.models import Category, Mode

# The categories a viewer sets on the pages (announcements are never held back), with
# the words the form uses.
FORM_CATEGORIES = (
    (Category.COMPANY_METRICS, "Company figures"),
    (Category.INDUSTRY_BENCHMARKS, "Industry benchmarks"),
    (Category.DIRECTORY, "Company directory"),
)
FORM_MODES = (
    (Mode.REALTIME, "in real time"),
    (Mode.S10, "every 10 s"),
    (Mode.S30, "every 30 s"),
    (Mode.M1, "every minute"),
    (Mode.M5, "every 5 minutes"),
    (Mode.MANUAL, "manually"),
)


def refresh_settings_form(request: HttpRequest) -> dict:
    return {
        "refresh_categories": [(str(value), label) for value, label in FORM_CATEGORIES],
        "refresh_modes": [(str(value), label) for value, label in FORM_MODES],
    }
