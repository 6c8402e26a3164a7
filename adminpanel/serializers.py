"""JSON bodies of the operators' endpoints: what clients send, validated strictly (unknown
fields, wrong types and out-of-range values are 400 with the reason), and the reply
shapes for the OpenAPI schema."""

from __future__ import annotations

import re

from django.conf import settings
from rest_framework import serializers

from adminpanel.models import EngagementKind
from changes.contexts import InvalidContext, context_parse
from common.serializers import (
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    StrictSerializer,
)
from emissions.access import MONITOR
from realtime.models import Transport

# Notification ids are short tokens (letters, digits and `._:-`).
_NOTIFICATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}\Z")
# The longest retry hint an operator may set: an hour. Clients look again after it.
RETRY_AFTER_MAX_S = 3600
# How far ahead a window may be announced: a week.
ANNOUNCE_BEFORE_MAX_S = 7 * 24 * 3600


class TextField(StrictCharField):
    """Free text for people: a JSON string without NUL bytes (DRF refuses them) that
    encodes as UTF-8 (a lone surrogate would fail in the database, not here)."""

    default_error_messages = {"encoding": "Must be valid Unicode text."}

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self.fail("encoding")
        return value


class StrictDateTimeField(serializers.DateTimeField):
    """An ISO 8601 string (no offset means UTC); not a number."""

    def to_internal_value(self, value):
        if not isinstance(value, str):
            self.fail("invalid", format="ISO 8601")
        return super().to_internal_value(value)


class MaintenanceSwitchSerializer(StrictSerializer):
    """`PUT /api/admin/maintenance`."""

    active = StrictBooleanField()
    message = TextField(max_length=500, allow_blank=True, required=False, default="")
    until = StrictDateTimeField(required=False, allow_null=True, default=None)
    retry_after = StrictIntegerField(
        min_value=1, max_value=RETRY_AFTER_MAX_S, required=False, allow_null=True, default=None
    )


class MaintenanceStateSerializer(serializers.Serializer):
    """Maintenance mode as it is now."""

    active = serializers.BooleanField()
    message = serializers.CharField()
    until = serializers.CharField(allow_null=True)
    retry_after = serializers.IntegerField(allow_null=True)
    window = serializers.IntegerField(allow_null=True)
    changed_at = serializers.CharField(allow_null=True)
    changed_by = serializers.CharField()


class MaintenanceWindowCreateSerializer(StrictSerializer):
    """`POST /api/admin/maintenance/windows`."""

    starts_at = StrictDateTimeField()
    ends_at = StrictDateTimeField()
    message = TextField(max_length=500)
    retry_after = StrictIntegerField(
        min_value=1, max_value=RETRY_AFTER_MAX_S, required=False, allow_null=True, default=None
    )
    announce_before_s = StrictIntegerField(
        min_value=0, max_value=ANNOUNCE_BEFORE_MAX_S, required=False, allow_null=True, default=None
    )


class MaintenanceWindowSerializer(serializers.Serializer):
    """A window as the API shows it."""

    id = serializers.IntegerField()
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()
    message = serializers.CharField()
    retry_after = serializers.IntegerField(allow_null=True)
    announce_before_s = serializers.SerializerMethodField()
    status = serializers.CharField()
    announced_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    cancelled_at = serializers.DateTimeField(allow_null=True)

    def get_announce_before_s(self, window) -> int:
        return int(window.announce_before.total_seconds())


class EngagementEventSerializer(StrictSerializer):
    """One engagement event."""

    kind = serializers.ChoiceField(choices=EngagementKind.choices)
    context = StrictCharField(max_length=100, required=False)
    transport = serializers.ChoiceField(choices=Transport.choices, required=False)
    from_transport = serializers.ChoiceField(choices=Transport.choices, required=False)
    notification = StrictCharField(max_length=100, required=False)

    def validate_context(self, value: str) -> str:
        if value == MONITOR:
            return value
        try:
            context_parse(value)
        except InvalidContext as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value

    def validate_notification(self, value: str) -> str:
        if not _NOTIFICATION_ID.match(value):
            raise serializers.ValidationError("Not a notification id.")
        return value

    def validate(self, data: dict) -> dict:
        kind = data["kind"]
        if kind == EngagementKind.TRANSPORT_FALLBACK:
            if "transport" not in data or "from_transport" not in data:
                raise serializers.ValidationError(
                    "transport_fallback names `from_transport` (what failed) and `transport`."
                )
            if data["transport"] == data["from_transport"]:
                raise serializers.ValidationError("A fallback goes to another transport.")
        elif "from_transport" in data:
            raise serializers.ValidationError("`from_transport` belongs to transport_fallback.")
        if kind == EngagementKind.NOTIFICATION_OPENED:
            if "notification" not in data:
                raise serializers.ValidationError("notification_opened names its `notification`.")
        elif "notification" in data:
            raise serializers.ValidationError("`notification` belongs to notification_opened.")
        return data


class EngagementReportSerializer(StrictSerializer):
    """`POST /api/engagement/events`."""

    events = serializers.ListField(
        child=EngagementEventSerializer(),
        min_length=1,
        max_length=settings.ENGAGEMENT_MAX_EVENTS,
    )


class EngagementAcceptedSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
