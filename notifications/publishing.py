"""What notifications do with the publisher's batches (changes/hooks.py): read the
industries' rankings before a batch moves them and create the batch's notifications in
its transaction. realtime/notification_delivery.py sends them once the frames went out."""

from __future__ import annotations

import logging

from changes.hooks import Batch, batch_read, batch_write
from changes.publisher import PublishResult
from notifications.creation import batch_notifications_create, batch_ranking_before
from notifications.messages import Delivery

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
