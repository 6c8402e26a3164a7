"""Live connections of every transport (the specification's active_connections)."""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models.functions import Now


class Transport(models.TextChoices):
    WEBSOCKET = "websocket"
    SSE = "sse"
    POLLING = "polling"


class ActiveConnection(models.Model):
    """One live client connection; its id is the `session` of `hello`."""

    id = models.CharField(primary_key=True, max_length=32)
    transport = models.CharField(max_length=10, choices=Transport.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE
    )
    audience = models.CharField(max_length=8)
    # The contexts the connection follows; the first is the dashboard it is showing.
    contexts = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    dashboard_context = models.CharField(max_length=100, blank=True, default="")
    client_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True, default="")
    # hostname:pid of the server process holding it; the sweep removes rows of dead ones.
    server = models.CharField(max_length=100)
    connected_at = models.DateTimeField(db_default=Now())
    last_seen = models.DateTimeField(db_default=Now())
    last_ack_seq = models.BigIntegerField(default=0)

    class Meta:
        db_table = "active_connections"
        indexes = [
            models.Index(fields=["last_seen"], name="active_connections_last_seen"),
            models.Index(fields=["client_address"], name="active_connections_address"),
        ]

    def __str__(self) -> str:
        return f"{self.transport} {self.id}"
