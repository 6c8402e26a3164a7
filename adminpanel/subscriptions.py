"""The audit of staff-only subscriptions, registered on the live sessions' subscribe hook
(realtime/session.py): every `monitor` or hidden-company context a staff connection
subscribes to is recorded."""

from __future__ import annotations

from channels.db import database_sync_to_async

from adminpanel.audit import staff_subscriptions_record
from changes.models import AUDIENCE_STAFF
from realtime.session import LiveSession
from realtime.session_subscriptions import subscribe_hook


@subscribe_hook
async def staff_subscriptions_audit(session: LiveSession, new: list[str]) -> None:
    if new and session.audience == AUDIENCE_STAFF:
        await database_sync_to_async(staff_subscriptions_record)(
            user=session.user, contexts=new, session=session.id, transport=session.transport
        )
