"""Where an SSE stream's contexts stand, as its client holds them: where each context
starts (from the `Last-Event-ID` token or the query), and the cursor token written as
the `id:` of every batch event so that a reconnect resumes each context exactly where it
was (PROTOCOL.md, *Server-Sent Events*)."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING

from changes.contexts import InvalidContext, context_normalize
from changes.selectors import LogState
from realtime.sse_codec import (
    TOKEN_EPOCH_CHARS,
    StreamRequest,
    batch_position,
    cursor_token,
    cursor_token_decode,
)

if TYPE_CHECKING:
    from realtime.session import LiveSession


class StreamCursors:
    """The cursors of one stream's client, beside its session's own."""

    def __init__(self) -> None:
        self.epoch = ""
        # Per context, the cursor the client holds: the seq_to of the last batch written
        # (or the seq of a reset). The session moves its own cursors only after `send`
        # returns, so the token of a batch is computed from these.
        self.positions: dict[str, int] = {}
        # Where the client asked to start, per (canonical) context: for the token of a
        # context not started yet.
        self.planned: dict[str, int] = {}
        # The cursors of the `Last-Event-ID`, also for contexts a later `session.subscribe`
        # brings back after a reconnect.
        self.resume: dict[str, int] = {}

    def starting_points(
        self, request: StreamRequest, state: LogState
    ) -> tuple[dict[str, int], str | None]:
        """`since` per context and the epoch to check, from the token or the query.

        A valid `Last-Event-ID` wins over `since` for every context it covers; one that
        cannot be decoded resets every context (`cursor_invalid`: a negative cursor).
        """
        canonical = []
        for context in request.contexts:
            with contextlib.suppress(InvalidContext):
                canonical.append(context_normalize(context))
        epoch = request.epoch
        since: dict[str, int] = {}
        if request.last_event_id is not None:
            token = cursor_token_decode(request.last_event_id)
            if token is None:
                return dict.fromkeys(canonical, -1), None
            # The full epoch when the prefix matches, so the session checks it again on
            # its own read; the prefix alone otherwise, which can only mismatch.
            matches = state.epoch[:TOKEN_EPOCH_CHARS] == token.epoch_prefix
            epoch = state.epoch if matches else token.epoch_prefix
            if matches:
                self.resume = token.cursors
            since = {c: token.cursors[c] for c in canonical if c in token.cursors}
        if request.since is not None:
            for context in canonical:
                since.setdefault(context, request.since)
        self.planned = {c: since.get(c, state.head_seq) for c in canonical}
        return since, epoch

    def written(self, kind: str, text: str, session: LiveSession) -> str | None:
        """Note what a message of this `kind` moves, as it is written; the `id:` of its
        event (a batch's cursor token), or None."""
        if kind == "batch":
            context, seq_to = batch_position(text)
            self.positions[context] = seq_to
            return cursor_token(self.epoch, self.token_cursors(session))
        if kind in ("reset", "hello"):
            body = json.loads(text)
            self.epoch = body.get("epoch") or self.epoch
            if kind == "reset" and body.get("context"):
                self.positions[body["context"]] = body["seq"]
        return None

    def token_cursors(self, session: LiveSession) -> dict[str, int]:
        """Every subscribed context's cursor as the client holds it now."""
        cursors: dict[str, int] = {}
        for context in dict.fromkeys([*session.cursors, *session.switching]):
            if context in self.positions:
                cursors[context] = self.positions[context]
            elif context in session.cursors:
                cursors[context] = session.cursors[context]
            elif context in self.planned and self.planned[context] >= 0:
                cursors[context] = self.planned[context]
        return cursors

    def group_since(
        self, session: LiveSession, contexts: list[str], since: int | dict | None
    ) -> dict[str, int]:
        """Where each context of a `session.subscribe` starts.

        Only contexts new to the session get a start: moving the cursor of one already
        followed could skip frames still on their way. A context the client held before
        a reconnect (in its Last-Event-ID) continues from there, or from `since` if that
        is earlier: everything after the client's cursor, nothing missed.
        """
        starts: dict[str, int] = {}
        for context in contexts:
            try:
                name = context_normalize(context)
            except InvalidContext:
                continue
            if name in session.cursors or name in session.switching:
                continue
            start = since.get(context, since.get(name)) if isinstance(since, dict) else since
            held = self.resume.get(name)
            if held is not None:
                start = held if start is None else min(start, held)
            if start is not None:
                starts[name] = start
                self.planned[name] = start
        return starts
