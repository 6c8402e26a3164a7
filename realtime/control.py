"""Messages to chosen live sessions on every server process: a user's new refresh
policy, a notification for the sessions that may see it.

A control message travels on the `system` group, which every process's hub joins; each
hub hands it to the handler registered for its action, once per local session that the
message targets (all sessions, or those of some clients). Apps register their handlers
(`@control_handler("policy_changed")`), so realtime needs to know nothing about them.
A client is a signed-in user (`user:<id>`) or an anonymous browser session
(`anon:<session key>`); one client may hold several connections.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from realtime.groups import SYSTEM_GROUP

if TYPE_CHECKING:
    from realtime.session import LiveSession

logger = logging.getLogger(__name__)

CONTROL_MESSAGE_TYPE = "system.control"

Handler = Callable[["LiveSession", dict], Awaitable[None]]
_handlers: dict[str, Handler] = {}
# Called once per control message per process, sessions or not (a process-wide cache kept
# current by the messages, say).
Observer = Callable[[dict], Awaitable[None]]
_observers: dict[str, Observer] = {}


def control_handler(action: str) -> Callable[[Handler], Handler]:
    """Register the coroutine that applies `action` to one targeted session."""

    def register(handler: Handler) -> Handler:
        _handlers[action] = handler
        return handler

    return register


def control_observer(action: str) -> Callable[[Observer], Observer]:
    """Register a coroutine that sees each `action` message once per process, before the
    per-session handler runs."""

    def register(observer: Observer) -> Observer:
        _observers[action] = observer
        return observer

    return register


async def control_send(action: str, payload: dict, *, clients: Iterable[str] | None = None) -> None:
    """Send `action` to the sessions of `clients` (None: every session) everywhere."""
    await get_channel_layer().group_send(
        SYSTEM_GROUP,
        {
            "type": CONTROL_MESSAGE_TYPE,
            "action": action,
            "clients": None if clients is None else sorted(set(clients)),
            "payload": payload,
        },
    )


def control_send_sync(action: str, payload: dict, *, clients: Iterable[str] | None = None) -> None:
    """control_send from synchronous code (services, the admin, Celery tasks)."""
    async_to_sync(control_send)(action, payload, clients=clients)


async def control_dispatch(sessions: Iterable[LiveSession], message: dict) -> int:
    """Apply one control message to the targeted sessions of this process; how many."""
    observer = _observers.get(message.get("action", ""))
    if observer is not None:
        try:
            await observer(message.get("payload") or {})
        except Exception:
            logger.exception("control observer of %s failed", message.get("action"))
    handler = _handlers.get(message.get("action", ""))
    if handler is None:
        if observer is None:
            logger.warning("no handler for control action %r", message.get("action"))
        return 0
    clients = message.get("clients")
    targets = set(clients) if clients is not None else None
    applied = 0
    for session in list(sessions):
        if targets is not None and session.client_key not in targets:
            continue
        try:
            await handler(session, message.get("payload") or {})
            applied += 1
        except Exception:
            logger.exception("control %s failed for session %s", message.get("action"), session.id)
    return applied


# -- process messages: once per server process, not per session -----------------------------

PROCESS_MESSAGE_TYPE = "system.process"

ProcessHandler = Callable[[Any, dict], Awaitable[None]]
_process_handlers: dict[str, ProcessHandler] = {}


def process_handler(action: str) -> Callable[[ProcessHandler], ProcessHandler]:
    """Register the coroutine that applies `action` once in each server process; it is
    given the process's hub (maintenance mode refreshing its cache, the monitor snapshot
    handed to the hub's `monitor` subscribers)."""

    def register(handler: ProcessHandler) -> ProcessHandler:
        _process_handlers[action] = handler
        return handler

    return register


async def process_send(action: str, payload: dict) -> None:
    """Send `action` to every server process's hub."""
    await get_channel_layer().group_send(
        SYSTEM_GROUP, {"type": PROCESS_MESSAGE_TYPE, "action": action, "payload": payload}
    )


def process_send_sync(action: str, payload: dict) -> None:
    """process_send from synchronous code."""
    async_to_sync(process_send)(action, payload)


async def process_dispatch(hub: Any, message: dict) -> bool:
    """Apply one process message to this process's hub; False when nobody handles it."""
    handler = _process_handlers.get(message.get("action", ""))
    if handler is None:
        logger.warning("no handler for process action %r", message.get("action"))
        return False
    try:
        await handler(hub, message.get("payload") or {})
    except Exception:
        logger.exception("process action %s failed", message.get("action"))
    return True
