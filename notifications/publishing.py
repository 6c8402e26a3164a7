"""What notifications do with the publisher's batches (changes/hooks.py): read the
industries' rankings before a batch moves them, create the batch's notifications in its
transaction, and send them once its frames went out."""

from __future__ import annotations

import logging

from changes.hooks import Batch, after_fan_out, batch_read, batch_write
from changes.publisher import PublishResult
from notifications.messages import Delivery
from notifications.services import (
    batch_notifications_create,
    batch_ranking_before,
    notifications_send,
)

logger = logging.getLogger(__name__)

RANKING = "notifications.ranking"
CREATED = "notifications"


@batch_read(RANKING)
def ranking_before(batch: Batch) -> dict | None:
    """The top N of every industry the batch touches, before its latest totals move."""
    return batch_ranking_before(batch.cursor, changes=batch.changes)


@batch_write(CREATED)
def notifications_create(batch: Batch) -> list[Delivery]:
    """The batch's notifications, committed with it."""
    return batch_notifications_create(
        batch.cursor,
        changes=batch.changes,
        slugs=batch.slugs,
        ranking=batch.extras.get(RANKING),
        now=batch.now,
    )


def batch_notifications(result: PublishResult) -> list[Delivery]:
    """The notifications a published batch created (for its senders and for tests)."""
    return result.extras.get(CREATED) or []


@after_fan_out(CREATED)
async def notifications_fan_out(result: PublishResult) -> None:
    """Send a batch's notifications after its frames. A failure is logged, not raised: the
    batch is published, and notifications that need an acknowledgement are delivered
    again on reconnect (and carried by polls)."""
    deliveries = batch_notifications(result)
    if not deliveries:
        return
    try:
        await notifications_send(deliveries)
    except Exception:
        logger.exception("could not send %d notification(s)", len(deliveries))
