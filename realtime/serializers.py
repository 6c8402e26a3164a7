"""JSON bodies of the live protocol's REST endpoints: validation of what clients send,
and the reply shapes for the OpenAPI schema."""

from __future__ import annotations

from rest_framework import serializers

from common.serializers import StrictCharField, StrictIntegerField, StrictSerializer

# A seq is a PostgreSQL bigint.
SEQ_MAX = 2**63 - 1
# Session ids are uuid4 hex (realtime.session.LiveSession), ActiveConnection.id holds 32.
SESSION_MAX_LENGTH = 32
# Notification ids are short tokens; anything longer cannot name one.
NOTIFICATION_MAX_LENGTH = 100


class SubscribeSerializer(StrictSerializer):
    """`POST /api/realtime/subscribe`: add contexts to an SSE or polling session."""

    session = StrictCharField(max_length=SESSION_MAX_LENGTH)
    # Malformed context strings are not a 400: they come back in `rejected`, as on the
    # WebSocket. Only a non-list or non-strings are.
    contexts = serializers.ListField(
        child=StrictCharField(allow_blank=True, trim_whitespace=False), allow_empty=True
    )


class AcknowledgeSerializer(StrictSerializer):
    """`POST /api/updates/acknowledge`: `{session, seq}` or `{session, notification}`."""

    session = StrictCharField(max_length=SESSION_MAX_LENGTH)
    seq = StrictIntegerField(required=False, min_value=0, max_value=SEQ_MAX)
    notification = StrictCharField(required=False, max_length=NOTIFICATION_MAX_LENGTH)

    def validate(self, attrs):
        if ("seq" in attrs) == ("notification" in attrs):
            raise serializers.ValidationError("Send either `seq` or `notification`.")
        return attrs


# -- reply shapes (documentation only) ----------------------------------------------------


class RejectionSerializer(serializers.Serializer):
    context = serializers.JSONField()
    code = serializers.ChoiceField(choices=["invalid_context", "forbidden_context"])


class SubscribedSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["subscribed"])
    contexts = serializers.ListField(child=serializers.CharField())
    rejected = RejectionSerializer(many=True)
    seq = serializers.IntegerField()


class StatusSerializer(serializers.Serializer):
    epoch = serializers.CharField()
    head_seq = serializers.IntegerField()
    pending = serializers.IntegerField(help_text="unpublished changes, counted up to a cap")
    pending_capped = serializers.BooleanField(help_text="true: more than `pending` wait")
    lag_ms = serializers.IntegerField(help_text="age of the oldest unpublished change")
    maintenance = serializers.BooleanField()
    last_published_at = serializers.CharField(allow_null=True)


class CheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    latency_ms = serializers.FloatField(required=False)
    error = serializers.CharField(required=False)


class PublisherCheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    lag_ms = serializers.IntegerField(allow_null=True)
    pending = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(required=False)


class HealthChecksSerializer(serializers.Serializer):
    database = CheckSerializer()
    redis = CheckSerializer()
    channel_layer = CheckSerializer()
    publisher = PublisherCheckSerializer()


class ConnectionCountsSerializer(serializers.Serializer):
    websocket = serializers.IntegerField(allow_null=True)
    sse = serializers.IntegerField(allow_null=True)
    polling = serializers.IntegerField(allow_null=True)
    total = serializers.IntegerField(allow_null=True)


class ProcessConnectionsSerializer(ConnectionCountsSerializer):
    server = serializers.CharField(help_text="hostname:pid, as the monitor names it")


class CeleryStatusSerializer(serializers.Serializer):
    ok = serializers.BooleanField(help_text="the broker answers and a worker was seen")
    app = serializers.CharField(allow_null=True, help_text="the Celery app tasks go to")
    broker = serializers.CharField(allow_null=True, help_text="the broker's kind (scheme)")
    broker_ok = serializers.BooleanField()
    workers = serializers.IntegerField(
        allow_null=True, help_text="workers seen within CELERY_WORKER_STALE_S"
    )
    worker_seen_s = serializers.FloatField(
        allow_null=True, help_text="seconds since the newest worker was seen"
    )
    error = serializers.CharField(required=False)


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded"])
    checks = HealthChecksSerializer()
    connections = ConnectionCountsSerializer()
    processes = ProcessConnectionsSerializer(
        many=True,
        allow_null=True,
        help_text="each server process holding connections (hostname:pid), with its counts",
    )
    celery = CeleryStatusSerializer(
        help_text="reported, not part of `status`: live updates do not depend on Celery"
    )
