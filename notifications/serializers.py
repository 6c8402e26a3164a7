"""JSON bodies of the notification endpoints: what staff send, and the reply shape."""

from __future__ import annotations

from rest_framework import serializers

from common.serializers import StrictBooleanField, StrictCharField, StrictSerializer
from notifications.models import BODY_MAX_LENGTH, TITLE_MAX_LENGTH, NotificationLevel
from notifications.validators import body_validator, title_validator


class BroadcastSerializer(StrictSerializer):
    """`POST /api/admin/updates/broadcast`: an announcement to everyone or one context."""

    level = serializers.ChoiceField(choices=NotificationLevel.values)
    title = StrictCharField(max_length=TITLE_MAX_LENGTH, validators=[title_validator])
    body = StrictCharField(max_length=BODY_MAX_LENGTH, validators=[body_validator])
    # Null or absent: every client. Checked against the contexts that exist by the view.
    context = StrictCharField(required=False, allow_null=True, max_length=100)
    requires_ack = StrictBooleanField(required=False, default=False)


class NotificationSerializer(serializers.Serializer):
    """The `notification` message (reply shape, documentation only)."""

    type = serializers.ChoiceField(choices=["notification"])
    id = serializers.UUIDField()
    level = serializers.ChoiceField(choices=NotificationLevel.values)
    title = serializers.CharField()
    body = serializers.CharField()
    context = serializers.CharField(allow_null=True)
    seq = serializers.IntegerField()
    requires_ack = serializers.BooleanField()
    kind = serializers.CharField()
    data = serializers.DictField()
    created_at = serializers.CharField()
    expires_at = serializers.CharField()
