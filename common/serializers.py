"""Strict JSON fields for request bodies: a value of the wrong JSON type, or a key nobody
knows, is refused instead of coerced or ignored."""

from __future__ import annotations

from collections.abc import Mapping

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    """A JSON string and nothing else: DRF's CharField would turn 5 into "5"."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer and nothing else: not "5", not 5.0, not true."""

    default_error_messages = {"invalid": "Must be an integer."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean and nothing else: not "true", "yes" or 1."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictSerializer(serializers.Serializer):
    """Refuses keys it does not know, so a misspelt field never passes silently."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            unknown = sorted(str(key)[:40] for key in set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {"non_field_errors": [f"Unknown field(s): {', '.join(unknown)}."]}
                )
        return super().to_internal_value(data)
