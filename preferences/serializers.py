"""Shapes of the refresh preference and policy endpoints, for the OpenAPI schema.

Validation itself lives in preferences.services (one place, with a reason per field,
checked against the client's current policy); these serializers describe the bodies.
"""

from __future__ import annotations

from rest_framework import serializers

from preferences.models import (
    Category,
    Mode,
    NotificationThreshold,
    Transport,
    UserType,
)

MODE_CHOICES = [*Mode.values, "default"]


class CategoryModeSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(
        choices=MODE_CHOICES,
        help_text="`default`: the policy's default for your account.",
    )


class QuietHoursSerializer(serializers.Serializer):
    start = serializers.CharField(help_text='local time "HH:MM"')
    end = serializers.CharField(help_text='local time "HH:MM" (may be earlier: spans midnight)')
    timezone = serializers.CharField(help_text="IANA name, e.g. Europe/Berlin")


class PreferencesSerializer(serializers.Serializer):
    """`PUT /api/user/refresh-preferences`: every field optional; those left out keep
    their value."""

    categories = serializers.DictField(
        child=CategoryModeSerializer(),
        required=False,
        help_text=f"keys: {', '.join(Category.values)}",
    )
    paused = serializers.BooleanField(required=False)
    notification_threshold = serializers.ChoiceField(
        choices=NotificationThreshold.values, required=False
    )
    quiet_hours = QuietHoursSerializer(required=False, allow_null=True)


class CategoryPolicySerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["realtime", "interval", "manual"])
    interval_ms = serializers.IntegerField(allow_null=True, help_text="null in manual mode")
    min_interval_ms = serializers.IntegerField()
    max_deliveries_per_minute = serializers.IntegerField()
    debounce_ms = serializers.IntegerField()
    realtime_allowed = serializers.BooleanField()


class EffectivePolicySerializer(serializers.Serializer):
    """The effective policy, as `hello.policy` carries it (docs/protocol.md)."""

    min_interval_ms = serializers.IntegerField()
    debounce_ms = serializers.IntegerField()
    max_batch = serializers.IntegerField()
    heartbeat_ms = serializers.IntegerField()
    user_type = serializers.ChoiceField(choices=UserType.values)
    categories = serializers.DictField(child=CategoryPolicySerializer())
    allowed_transports = serializers.ListField(
        child=serializers.ChoiceField(choices=Transport.values)
    )
    paused = serializers.BooleanField()
    notification_threshold = serializers.ChoiceField(choices=NotificationThreshold.values)
    quiet_hours = QuietHoursSerializer(allow_null=True)


class PreferencesReplySerializer(PreferencesSerializer):
    """The stored preferences (every category, `default` where none was chosen) and the
    effective policy they give."""

    policy = EffectivePolicySerializer()


class PolicySerializer(serializers.Serializer):
    user_type = serializers.ChoiceField(choices=UserType.values)
    category = serializers.ChoiceField(choices=Category.values)
    min_interval_ms = serializers.IntegerField(min_value=0)
    default_interval_ms = serializers.IntegerField(min_value=0, help_text="0: real time")
    max_deliveries_per_minute = serializers.IntegerField(min_value=1)
    debounce_ms = serializers.IntegerField(min_value=0)
    allowed_transports = serializers.ListField(
        child=serializers.ChoiceField(choices=Transport.values)
    )
    realtime_allowed = serializers.BooleanField()


class PolicyEditSerializer(PolicySerializer):
    """One edited policy: `user_type`, `category` and the fields to change."""

    min_interval_ms = serializers.IntegerField(min_value=0, required=False)
    default_interval_ms = serializers.IntegerField(min_value=0, required=False)
    max_deliveries_per_minute = serializers.IntegerField(min_value=1, required=False)
    debounce_ms = serializers.IntegerField(min_value=0, required=False)
    allowed_transports = serializers.ListField(
        child=serializers.ChoiceField(choices=Transport.values), required=False
    )
    realtime_allowed = serializers.BooleanField(required=False)


class PoliciesEditSerializer(serializers.Serializer):
    """`PUT /api/admin/refresh-policies`."""

    policies = PolicyEditSerializer(many=True)


class PoliciesSerializer(serializers.Serializer):
    policies = PolicySerializer(many=True)


class PoliciesEditReplySerializer(PoliciesSerializer):
    changed = PolicySerializer(many=True, help_text="the policies this request changed")
