"""The transports' door (realtime/admission.py): registered checks, first refusal wins,
and no user lookup unless a check needs one. The transports' answers to a refusal
(1013, 503 with Retry-After) are tested with maintenance in tests/adminpanel."""

import pytest

from realtime import admission
from realtime.admission import Refusal, admission_refusal, status_figures

pytestmark = pytest.mark.django_db


def test_adminpanel_registers_maintenance_at_the_door():
    assert "maintenance" in admission._checks
    assert "maintenance" in admission._status_fields


async def test_maintenance_off_admits_without_looking_the_user_up():
    looked_up = []

    async def user_of():
        looked_up.append(True)
        return None

    assert await admission_refusal(transport="polling", user_of=user_of) is None
    assert looked_up == []


async def test_the_first_refusal_wins(monkeypatch):
    asked = []

    async def closed(*, transport, user_of):
        asked.append(("closed", transport))
        return Refusal(code="closed", message="Closed.", retry_after_s=7)

    async def never(*, transport, user_of):
        asked.append(("never", transport))
        return Refusal(code="never", message="Never.", retry_after_s=1)

    monkeypatch.setattr(admission, "_checks", {"closed": closed, "never": never})

    async def user_of():
        return None

    refusal = await admission_refusal(transport="sse", user_of=user_of)
    assert refusal == Refusal(code="closed", message="Closed.", retry_after_s=7)
    assert asked == [("closed", "sse")]


def test_status_figures_come_from_the_registered_fields(monkeypatch):
    monkeypatch.setattr(admission, "_status_fields", {"a": lambda: 1, "b": lambda: "x"})
    assert status_figures() == {"a": 1, "b": "x"}
