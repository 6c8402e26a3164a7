"""A batch's frames: each context's items split into group messages of at most
PUBLISHER_FRAME_MAX_ITEMS, chained by `prev_seq` from the context's stored head, which
moves with them in the batch's transaction."""

from __future__ import annotations

from dataclasses import dataclass

from changes.items import BatchMessage, ChangeItem, items_coalesce


@dataclass
class Frame:
    """One group message: part of a batch for one context and audience."""

    context: str
    audience: str
    seq_from: int
    seq_to: int
    prev_seq: int
    message: BatchMessage
    # Its items before coalescing (one per change routed to the context): what a
    # catch-up through it counts against CATCHUP_MAX_CHANGES.
    routed: int = 0


def frames_build(
    cursor, routed: dict[tuple[str, str], list[ChangeItem]], frame_size: int
) -> list[Frame]:
    """Split each context's items into frames chained by prev_seq; store the new heads."""
    if not routed:
        return []
    keys = sorted(routed)
    cursor.execute(
        "SELECT context, audience, last_seq FROM context_heads"
        " WHERE (context, audience) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        " FOR UPDATE",
        [[k[0] for k in keys], [k[1] for k in keys]],
    )
    heads = {(c, a): seq for c, a, seq in cursor.fetchall()}
    frames: list[Frame] = []
    new_heads: list[tuple[str, str, int]] = []
    for key in keys:
        context, audience = key
        items = routed[key]
        prev_seq = heads.get(key, 0)
        for start in range(0, len(items), frame_size):
            chunk = items[start : start + frame_size]
            seq_from, seq_to = chunk[0]["seq"], chunk[-1]["seq"]
            message: BatchMessage = {
                "type": "batch",
                "context": context,
                "seq_from": seq_from,
                "seq_to": seq_to,
                "prev_seq": prev_seq,
                "changes": items_coalesce(chunk),
            }
            frames.append(Frame(context, audience, seq_from, seq_to, prev_seq, message, len(chunk)))
            prev_seq = seq_to
        new_heads.append((context, audience, prev_seq))
    cursor.execute(
        "INSERT INTO context_heads (context, audience, last_seq)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[])"
        " ON CONFLICT (context, audience) DO UPDATE SET last_seq = EXCLUDED.last_seq",
        [[h[0] for h in new_heads], [h[1] for h in new_heads], [h[2] for h in new_heads]],
    )
    return frames
