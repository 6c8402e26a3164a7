"""What notifications announce to the layers above them (docs/architecture.md).

`notifications_created` is sent once notifications made outside the publisher (staff
announcements) committed, with `deliveries` (notifications.messages.Delivery).
realtime/notification_delivery.py receives it and hands them to every server process's
sessions. The publisher's own batches go the same way through its after-fan-out hook."""

from django.dispatch import Signal

notifications_created = Signal()
