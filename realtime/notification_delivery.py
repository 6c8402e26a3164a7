"""Notifications on the live transports (WebSocket and SSE sessions of this process).

- Live: the sender's `notification` control message reaches every process's hub; the
  handler below gives each session the notifications it should get and may see (its
  audience, the contexts it follows, its client when targeted), each at most once per
  connection, paused or not.
- Retry: after a subscribe, a session gets again the unexpired notifications requiring
  acknowledgement that its client was sent before and has not acknowledged (announcements
  even if never sent), for the contexts it just joined (and, on its first subscribe, those
  for everyone). Each process keeps those candidates
  in memory (refreshed every PENDING_REFRESH_S and on every control message), so a
  connect costs a query only when something is actually pending.
- Attempts: every frame sent is counted per client, in batches written every
  ATTEMPTS_FLUSH_S (one statement for the whole process, not one per delivery).
- Acknowledgement: `ack` with a notification id, or with a seq (the notifications
  requiring acknowledgement sent to this connection up to that seq).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings

from changes.hooks import after_fan_out
from changes.models import AUDIENCE_STAFF
from changes.publisher import PublishResult
from common.errors import ApplicationError
from notifications.messages import Delivery
from notifications.models import NotificationType
from notifications.publishing import batch_notifications
from notifications.selectors import (
    client_key_valid,
    notifications_awaiting_ack,
    receipts_state,
)
from notifications.services import (
    NOTIFICATION_ACTION,
    notification_acknowledge,
    notification_attempts_record,
    notifications_acknowledge_sent,
)
from notifications.signals import notifications_created
from realtime.control import control_handler, control_observer, control_send
from realtime.loop_local import LoopLocal
from realtime.session import LiveSession
from realtime.session_subscriptions import subscribe_hook

logger = logging.getLogger(__name__)

ANNOUNCEMENT = NotificationType.ANNOUNCEMENT.value

# Attempts are written this often, for every session of the process in one statement.
# Counts lost when a process dies within this window are statistics, not deliveries.
ATTEMPTS_FLUSH_S = 0.5
# How old the in-memory list of notifications awaiting acknowledgement may get: new ones
# arrive by control message at once; this catches expiries and messages the lossy
# channel layer dropped.
PENDING_REFRESH_S = 5.0


def receipt_key(session: LiveSession) -> str:
    """The client a session's deliveries and acknowledgements count for."""
    key = session.client_key
    return key if client_key_valid(key) else f"conn:{session.id}"


@dataclass
class SessionNotifications:
    """What one connection was sent: id -> (seq, requires_ack)."""

    sent: dict[str, tuple[int, bool]] = field(default_factory=dict)
    subscribed_once: bool = False


_sessions: weakref.WeakKeyDictionary[LiveSession, SessionNotifications] = (
    weakref.WeakKeyDictionary()
)


def _state(session: LiveSession) -> SessionNotifications:
    state = _sessions.get(session)
    if state is None:
        state = _sessions[session] = SessionNotifications()
    return state


def _may_receive(session: LiveSession, item: Delivery) -> bool:
    """Whether this session should get the notification and may see it."""
    if item["audience"] == AUDIENCE_STAFF and session.audience != AUDIENCE_STAFF:
        return False
    if item["targets"] and receipt_key(session) not in item["targets"]:
        return False
    if item["expires_at"] <= time.time():
        return False
    context = item["context"]
    return context is None or context in session.cursors or context in session.switching


async def _send(session: LiveSession, item: Delivery) -> bool:
    state = _state(session)
    if item["id"] in state.sent:
        return False
    state.sent[item["id"]] = (item["seq"], item["requires_ack"])
    await session.send(item["frame"])
    _recorder().add(item["id"], receipt_key(session))
    return True


# -- attempts ------------------------------------------------------------------------------


class AttemptRecorder:
    """Delivery attempts of one process, written in batches."""

    def __init__(self) -> None:
        self.pending: Counter[tuple[str, str]] = Counter()
        self.task: asyncio.Task | None = None

    def add(self, notification_id: str, client: str) -> None:
        self.pending[(notification_id, client)] += 1
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._flush_later(), name="notification-attempts")

    async def _flush_later(self) -> None:
        await asyncio.sleep(ATTEMPTS_FLUSH_S)
        await self.flush()

    async def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, Counter()
        attempts = [(nid, client, count) for (nid, client), count in sorted(batch.items())]
        try:
            await database_sync_to_async(notification_attempts_record)(attempts=attempts)
        except Exception:
            logger.exception("could not record %d notification attempt(s)", len(attempts))


_recorders: LoopLocal[AttemptRecorder] = LoopLocal(AttemptRecorder)
_recorder = _recorders.get


async def attempts_flush() -> None:
    """Write this process's attempts now (tests; a process that is stopping)."""
    recorder = _recorder()
    if recorder.task is not None and not recorder.task.done():
        recorder.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recorder.task
    await recorder.flush()


# -- awaiting acknowledgement ----------------------------------------------------------------


class PendingNotifications:
    """This process's copy of the unexpired notifications that require acknowledgement."""

    def __init__(self) -> None:
        self.items: dict[str, Delivery] = {}
        self.loaded_at: float | None = None
        self.lock = asyncio.Lock()
        # Added by control messages while a reload was reading: kept across the reload.
        self.arrived: dict[str, tuple[float, Delivery]] = {}

    def add(self, item: Delivery) -> None:
        self.items[item["id"]] = item
        self.arrived[item["id"]] = (time.monotonic(), item)

    async def current(self) -> list[Delivery]:
        async with self.lock:
            now = time.monotonic()
            if self.loaded_at is None or now - self.loaded_at > PENDING_REFRESH_S:
                started = now
                loaded = await database_sync_to_async(notifications_awaiting_ack)(
                    limit=settings.NOTIFY_PENDING_MAX
                )
                items = {item["id"]: item for item in loaded}
                for nid, (at, item) in self.arrived.items():
                    if at >= started:
                        items.setdefault(nid, item)
                self.items, self.arrived, self.loaded_at = items, {}, started
        wall = time.time()
        return [item for item in self.items.values() if item["expires_at"] > wall]


_pending: LoopLocal[PendingNotifications] = LoopLocal(PendingNotifications)
_pending_notifications = _pending.get


# -- the hooks -------------------------------------------------------------------------------


@control_observer(NOTIFICATION_ACTION)
async def notifications_observe(payload: dict) -> None:
    """Every process keeps its list of notifications awaiting acknowledgement current."""
    pending = _pending_notifications()
    for item in payload.get("notifications", []):
        if item.get("requires_ack"):
            pending.add(item)


@control_handler(NOTIFICATION_ACTION)
async def notifications_deliver(session: LiveSession, payload: dict) -> None:
    """Send a session the notifications of one control message that are for it."""
    for item in payload.get("notifications", []):
        if _may_receive(session, item):
            await _send(session, item)


@subscribe_hook
async def notifications_redeliver(session: LiveSession, contexts: list[str]) -> None:
    """After a subscribe: what awaits this client's acknowledgement in the contexts it
    joined (and, the first time, for everyone): notifications it was sent before and has
    not acknowledged, and announcements it has not acknowledged, sent or not (a change
    notification never sent to it is old news its snapshot already shows)."""
    state = _state(session)
    first = not state.subscribed_once
    state.subscribed_once = True
    joined = set(contexts)
    candidates = [
        item
        for item in await _pending_notifications().current()
        if (item["context"] in joined or (first and item["context"] is None))
        and item["id"] not in state.sent
        and _may_receive(session, item)
    ]
    client = receipt_key(session)
    if client.startswith("conn:"):
        # A connection of its own was sent nothing before and acknowledged nothing.
        candidates = [item for item in candidates if item["kind"] == ANNOUNCEMENT]
    if not candidates:
        return
    receipts: dict[str, tuple[int, bool]] = {}
    if not client.startswith("conn:"):
        recorder = _recorder()
        if recorder.pending:
            await attempts_flush()  # a reconnect right after a delivery must see it
        receipts = await database_sync_to_async(receipts_state)(
            client=client, ids=[item["id"] for item in candidates]
        )
    due = []
    for item in candidates:
        attempts, acknowledged = receipts.get(item["id"], (0, False))
        if not acknowledged and (attempts > 0 or item["kind"] == ANNOUNCEMENT):
            due.append(item)
    due.sort(key=lambda item: (item["created_at"], item["id"]))
    for item in due[-settings.NOTIFY_REDELIVERY_MAX :]:
        await _send(session, item)


# -- acknowledgements ------------------------------------------------------------------------


async def session_acknowledge(session: LiveSession, notification: str) -> str | None:
    """`ack` with a notification id; the reason it is refused, or None."""
    try:
        await database_sync_to_async(notification_acknowledge)(
            notification=notification, client=receipt_key(session), audience=session.audience
        )
    except ApplicationError as exc:
        return exc.detail
    _acknowledged(session, [notification.lower()])
    return None


def _acknowledged(session: LiveSession, ids: list[str]) -> None:
    """Nothing left to acknowledge for these on this connection."""
    sent = _state(session).sent
    for nid in ids:
        if nid in sent:
            sent[nid] = (sent[nid][0], False)


async def session_acknowledge_through(session: LiveSession, seq: int) -> int:
    """`ack` with a seq: the notifications requiring acknowledgement sent to this
    connection with a seq up to `seq`. How many."""
    state = _state(session)
    ids = [nid for nid, (nseq, requires_ack) in state.sent.items() if requires_ack and nseq <= seq]
    if ids:
        await database_sync_to_async(notifications_acknowledge_sent)(
            ids=ids, client=receipt_key(session)
        )
        _acknowledged(session, ids)
    return len(ids)


# -- sending ---------------------------------------------------------------------------------


async def notifications_send(deliveries: list[Delivery]) -> None:
    """Hand notifications to every server process's sessions (after they committed): one
    control message for those meant for every client, one per targeted notification."""
    everyone = [d for d in deliveries if not d["targets"]]
    if everyone:
        await control_send(NOTIFICATION_ACTION, {"notifications": everyone})
    for targeted in (d for d in deliveries if d["targets"]):
        await control_send(
            NOTIFICATION_ACTION, {"notifications": [targeted]}, clients=targeted["targets"]
        )


@after_fan_out("notifications")
async def batch_notifications_send(result: PublishResult) -> None:
    """Send a published batch's notifications after its frames. A failure is logged, not
    raised: the batch is published, and notifications that need an acknowledgement are
    delivered again on reconnect (and carried by polls)."""
    deliveries = batch_notifications(result)
    if not deliveries:
        return
    try:
        await notifications_send(deliveries)
    except Exception:
        logger.exception("could not send %d notification(s)", len(deliveries))


def announcements_send(sender, *, deliveries: list[Delivery], **kwargs) -> None:
    """notifications' `notifications_created` (staff announcements, once committed)."""
    async_to_sync(notifications_send)(deliveries)


notifications_created.connect(announcements_send, dispatch_uid="realtime-notifications-created")
