"""What a live session (realtime/session.py) follows: subscribing to contexts, pausing,
resuming and unsubscribing, with the `subscribed` replies, and holding the session to
its client's refresh policy when that changes. A mixin of LiveSession: the cursors,
buffers and pause state it works on are the session's own, set up in its __init__."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async

from changes.contexts import SYSTEM
from changes.selectors import LogState, change_log_state
from emissions.access import contexts_authorize
from preferences.selectors import ClientPolicy, context_category
from realtime import protocol
from realtime.admission import subscriptions_over_cap
from realtime.policy import client_policy_rules
from realtime.services import connection_contexts_set

if TYPE_CHECKING:
    from realtime.session import LiveSession

logger = logging.getLogger(__name__)

# Run after each subscribe, with the contexts it added (maybe none): apps register what a
# session gets on joining, such as notifications still awaiting acknowledgement.
SubscribeHook = Callable[["LiveSession", list[str]], Awaitable[None]]
_subscribe_hooks: list[SubscribeHook] = []


def subscribe_hook(hook: SubscribeHook) -> SubscribeHook:
    """Register a coroutine run after every subscribe (once, whatever the imports)."""
    if hook not in _subscribe_hooks:
        _subscribe_hooks.append(hook)
    return hook


class TooManySubscriptions(Exception):
    """A subscribe that would exceed REALTIME_MAX_SUBSCRIPTIONS."""


class Subscriptions:
    """Mixin of LiveSession: its subscriptions and its refresh policy."""

    # -- the refresh policy -----------------------------------------------------------------

    def _policy_set(self, resolved: ClientPolicy) -> None:
        policy = resolved.policy
        heartbeat_ms = self.policy.get("heartbeat_ms", policy["heartbeat_ms"])
        if heartbeat_ms != policy["heartbeat_ms"]:
            # The transport owns its heartbeat (SSE beats more often than WebSocket). The
            # resolved policy may be shared by many sessions: copy before changing it.
            policy = {**policy, "heartbeat_ms": heartbeat_ms}
        self.client_policy = resolved
        self.policy = policy
        self.rules = client_policy_rules(resolved)

    async def policy_apply(self, resolved: ClientPolicy, *, announce: bool) -> None:
        """Hold an open session to a new effective policy, at once: tell the client
        (`policy`), re-time held batches, pause or resume when the paused preference
        flipped, and catch up contexts whose category left manual mode."""
        before = self.client_policy
        was_live = {category for category, rule in self.rules.items() if rule.live}
        self._policy_set(resolved)
        if announce:
            await self.send(protocol.policy_message(policy=self.policy))
        if not resolved.transport_allowed(self.transport):
            if self.on_transport_refused is not None:
                await self.on_transport_refused()
            return
        for wakeup in list(self.flush_wakeups.values()):
            wakeup.set()
        paused_before = before.preferences.paused if before is not None else False
        if resolved.preferences.paused and not paused_before and not self.paused:
            await self.pause()
        elif paused_before and not resolved.preferences.paused and self.paused:
            await self.resume()
        elif not self.paused:
            now_live = {c for c, rule in self.rules.items() if rule.live and c not in was_live}
            contexts = [
                context
                for context in self.cursors
                if context_category(context) in now_live and context not in self.switching
            ]
            if contexts:
                await self._refresh(contexts)

    async def _refresh(self, contexts: list[str]) -> None:
        """Catch the contexts up from their cursors (they were held in manual mode)."""
        since = {context: self.cursors[context] for context in contexts}
        for context in contexts:
            self.switching.setdefault(context, [])
        state = await database_sync_to_async(change_log_state)()
        contexts = [context for context in contexts if context in self.cursors]
        await self._start(contexts, since=since, epoch=None, state=state)

    # -- subscriptions ----------------------------------------------------------------------

    async def subscribe(
        self,
        contexts: list,
        *,
        since: int | dict | None = None,
        epoch: str | None = None,
        ref: Any = None,
    ) -> None:
        """Join the permitted contexts, reply `subscribed`, catch up, go live."""
        decisions = await database_sync_to_async(contexts_authorize)(
            user=self.user, contexts=contexts
        )
        accepted = [d.context for d in decisions if d.context and d.context != SYSTEM]
        accepted = list(dict.fromkeys(accepted))
        rejected = [d.rejection() for d in decisions if d.code]
        new = [c for c in accepted if c not in self.cursors]
        if over := subscriptions_over_cap(len(self.cursors) + len(new), per="connection"):
            raise TooManySubscriptions(over)
        for context in accepted:
            self.switching.setdefault(context, [])
            if context in new:
                await self.hub.join(self, context, self.audience)
        if self.closed:
            # Ended while joining (the client went away): no membership outlives it.
            await self.hub.leave_all(self)
            return
        # The log's state, and the row's contexts when they changed: one trip to the
        # database thread (a returning client's set-up makes several).
        state = await database_sync_to_async(_state_tracked)(
            session=self.id if new and self.tracked else None,
            contexts=self.active_contexts(new),
        )
        await self.send(
            protocol.subscribed(
                contexts=self.active_contexts(new),
                rejected=rejected,
                seq=state.head_seq,
                paused=self.paused,
                ref=ref,
            )
        )
        await self._start(accepted, since=since, epoch=epoch, state=state)
        for hook in _subscribe_hooks:
            try:
                await hook(self, new)
            except Exception:
                logger.exception("a subscribe hook failed for session %s", self.id)

    async def resume(self, *, since: int | dict | None = None, ref: Any = None) -> None:
        """Resume sending, catching up from `since` (or from each context's cursor)."""
        self.paused = False
        contexts = list(self.cursors)
        for context in contexts:
            self.switching.setdefault(context, [])
        state = await database_sync_to_async(change_log_state)()
        await self.send(
            protocol.subscribed(
                contexts=list(self.cursors), rejected=[], seq=state.head_seq, paused=False, ref=ref
            )
        )
        if since is None:
            since = dict(self.cursors)
        await self._start(contexts, since=since, epoch=None, state=state)

    async def pause(self, *, ref: Any = None) -> None:
        self.paused = True
        state = await database_sync_to_async(change_log_state)()
        await self.send(
            protocol.subscribed(
                contexts=list(self.cursors), rejected=[], seq=state.head_seq, paused=True, ref=ref
            )
        )

    async def unsubscribe(self, contexts: list, *, ref: Any = None) -> None:
        for requested in contexts:
            context = requested if isinstance(requested, str) else None
            if context in self.cursors:
                del self.cursors[context]
                self._switching_end(context)
                await self.hub.leave(self, context, self.audience)
        await self._track_contexts()
        state = await database_sync_to_async(change_log_state)()
        await self.send(
            protocol.subscribed(
                contexts=list(self.cursors),
                rejected=[],
                seq=state.head_seq,
                paused=self.paused,
                ref=ref,
            )
        )

    async def _track_contexts(self) -> None:
        if self.tracked:
            await database_sync_to_async(connection_contexts_set)(
                session=self.id, contexts=list(self.cursors)
            )

    def active_contexts(self, new: list[str] | None = None) -> list[str]:
        return list(dict.fromkeys([*self.cursors, *(new or [])]))


def _state_tracked(*, session: str | None, contexts: list[str]) -> LogState:
    """The log's state, after recording the contexts of `session` (when given)."""
    if session is not None:
        connection_contexts_set(session=session, contexts=contexts)
    return change_log_state()
