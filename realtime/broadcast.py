"""Sending published batches into the channel layer: the publisher's fan-out, registered
as its frames sender (changes/hooks.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from channels.layers import get_channel_layer

from changes.hooks import frames_sender
from common.json import json_dumps
from realtime.groups import SYSTEM_GROUP, context_group

if TYPE_CHECKING:
    from changes.publisher import Frame

# The group message types the hub receives.
BATCH_MESSAGE_TYPE = "context.batch"
SYSTEM_MESSAGE_TYPE = "system.message"

# What may travel on the implicit `system` context (PROTOCOL.md): to every connection,
# paused or not.
SYSTEM_MESSAGE_KINDS = ("notification", "maintenance")


def frame_group_message(frame: Frame) -> dict:
    """The channel-layer message for one frame: encoded once, here, for every receiver."""
    return {
        "type": BATCH_MESSAGE_TYPE,
        "context": frame.context,
        "audience": frame.audience,
        "seq_from": frame.seq_from,
        "seq_to": frame.seq_to,
        "prev_seq": frame.prev_seq,
        "routed": frame.routed,
        "frame": json_dumps(frame.message),
    }


@frames_sender
async def batch_frames_send(frames: list[Frame]) -> None:
    """One group_send per frame, in publication order."""
    layer = get_channel_layer()
    for frame in frames:
        await layer.group_send(
            context_group(frame.context, frame.audience), frame_group_message(frame)
        )


async def system_message_send(message: dict) -> None:
    """Send a `notification` or `maintenance` message to every connection of every server
    process (the implicit `system` context)."""
    if message.get("type") not in SYSTEM_MESSAGE_KINDS:
        raise ValueError(f"not a system message: {message.get('type')!r}")
    await get_channel_layer().group_send(
        SYSTEM_GROUP, {"type": SYSTEM_MESSAGE_TYPE, "frame": json_dumps(message)}
    )
