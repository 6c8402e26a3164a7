"""What an SSE or polling session asks for over REST (its socket cannot carry it): more
contexts, and acknowledgements. The rules live here; the views only parse and answer."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from changes.contexts import SYSTEM
from changes.selectors import change_log_state
from common.errors import ApplicationError, InvalidParameter, NotFound
from emissions.access import audience_of, contexts_authorize
from notifications.selectors import receipt_client_key
from notifications.services import notification_acknowledge, notifications_acknowledge_through
from realtime import protocol
from realtime.admission import subscriptions_over_cap
from realtime.groups import session_group
from realtime.models import ActiveConnection, Transport
from realtime.selectors import connection_owned
from realtime.services import connection_ack_record, connection_contexts_set


def _owned(*, user: Any, session: str) -> ActiveConnection:
    owned = connection_owned(session=session, user=user)
    if owned is None:
        raise NotFound("No such session.")
    return owned


def subscription_add(*, user: Any, session: str, contexts: list[str]) -> dict:
    """Add `contexts` to an SSE or polling session of `user`; the `subscribed` reply.
    Refused ones come back in `rejected`; more than REALTIME_MAX_SUBSCRIPTIONS in all is
    an error and changes nothing."""
    owned = _owned(user=user, session=session)
    if owned.transport == Transport.WEBSOCKET:
        raise ApplicationError("A WebSocket session subscribes over its socket.")
    decisions = contexts_authorize(user=user, contexts=contexts)
    accepted = list(
        dict.fromkeys(d.context for d in decisions if d.context and d.context != SYSTEM)
    )
    rejected = [d.rejection() for d in decisions if d.code]
    active = list(dict.fromkeys([*owned.contexts, *accepted]))
    if over := subscriptions_over_cap(len(active), per="session"):
        raise ApplicationError(over, code=protocol.TOO_MANY_SUBSCRIPTIONS)
    # The head before the stream hears of it: the stream starts the new contexts right
    # after this seq, so the client misses nothing published after `seq`.
    head = change_log_state().head_seq
    if active != list(owned.contexts):
        connection_contexts_set(session=owned.id, contexts=active)
    if accepted:
        async_to_sync(get_channel_layer().group_send)(
            session_group(owned.id),
            {"type": "session.subscribe", "contexts": accepted, "since": head},
        )
    return {"type": "subscribed", "contexts": active, "rejected": rejected, "seq": head}


@transaction.atomic
def acknowledgement_record(
    *,
    user: Any,
    session_key: str | None,
    session: str,
    seq: int | None = None,
    notification: str | None = None,
) -> None:
    """A session received one notification, or everything up to `seq`: its connection's
    last acknowledged seq and the notifications it covers, in one transaction."""
    owned = _owned(user=user, session=session)
    client = receipt_client_key(user=user, session_key=session_key, connection_id=owned.id)
    if notification is not None:
        notification_acknowledge(
            notification=notification, client=client, audience=audience_of(user)
        )
        return
    head = change_log_state().head_seq
    if seq > head:
        raise InvalidParameter(f"`seq` is above the server's head ({head}).")
    connection_ack_record(session=owned.id, seq=seq)
    notifications_acknowledge_through(client=client, seq=seq)
