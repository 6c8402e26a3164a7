"""Maintenance mode at the door of the live transports (realtime/admission.py): while it
is on, new connections and polls are refused with its message and retry hint."""

from __future__ import annotations

from adminpanel.selectors import (
    maintenance_current,
    maintenance_refusing,
)
from realtime.admission import Refusal, UserOf, admission_check, status_field
from realtime.metrics import maintenance_refusal_count

DEFAULT_MESSAGE = "The service is under maintenance."


@admission_check("maintenance")
async def maintenance_admission(*, transport: str, user_of: UserOf) -> Refusal | None:
    maintenance = await maintenance_refusing(user_of=user_of)
    if maintenance is None:
        return None
    maintenance_refusal_count(transport)
    return Refusal(
        code="maintenance",
        message=maintenance.message or DEFAULT_MESSAGE,
        retry_after_s=maintenance.retry_hint(),
    )


@status_field("maintenance")
def maintenance_on() -> bool:
    return maintenance_current().active
