"""The change log and the publisher's state.

`data_changes` holds every captured change (filled by the triggers of changes.capture)
and, once published, its `seq`. `change_routes` says which contexts saw which seq, for
which audiences; catch-up is an index range scan over it. `context_heads` keeps the
last seq published to each context and audience (the next batch's `prev_seq`),
`aggregate_totals` the running totals the publisher maintains, and `change_log_state`
the epoch and the head.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Func, Q

# Audiences, as bits in change_routes.audiences: one query serves both.
AUDIENCE_PUBLIC = "public"
AUDIENCE_STAFF = "staff"
AUDIENCES = (AUDIENCE_PUBLIC, AUDIENCE_STAFF)
AUDIENCE_BITS = {AUDIENCE_PUBLIC: 1, AUDIENCE_STAFF: 2}

SIGNIFICANCE_LEVELS = ("minor", "major", "critical")


class ClockTimestamp(Func):
    """clock_timestamp(): the moment of capture, not the start of the transaction."""

    template = "clock_timestamp()"
    output_field = models.DateTimeField()


class TimeOrderedUUID(Func):
    """uuid_time_ordered() (migration 0003): a version 7 UUID, its first 48 bits the time
    in milliseconds, the rest random. New rows land at the right end of the primary-key
    index; random (version 4) ids put each of a bulk statement's rows on a different
    index page, which measured as a large part of what capture added to a 100,000-row
    UPDATE (docs/benchmarks.md)."""

    template = "uuid_time_ordered()"
    output_field = models.UUIDField()


class NextCaptureId(Func):
    template = "nextval('data_changes_capture_id_seq')"
    output_field = models.BigIntegerField()


class ChangeType(models.TextChoices):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


class DataChange(models.Model):
    """One captured change of a tracked row (or one aggregate the publisher moved)."""

    id = models.UUIDField(primary_key=True, db_default=TimeOrderedUUID(), editable=False)
    # Capture order: a sequence the trigger draws from. Row locks serialise the writers of
    # one record, so for any one record this is its commit order.
    capture_id = models.BigIntegerField(db_default=NextCaptureId(), editable=False)
    table_name = models.CharField(max_length=64)
    entity = models.CharField(max_length=32)
    record_id = models.CharField(max_length=100)
    change_type = models.CharField(max_length=8, choices=ChangeType.choices)
    changed_columns = ArrayField(models.CharField(max_length=64), default=list)
    # {"old": {...}, "new": {...}}: the changed columns' values (every column on insert
    # and delete).
    change_data = models.JSONField(default=dict)
    # Routing and audience keys read when the change was captured (company, industry,
    # visibility, ...).
    routing = models.JSONField(default=dict)
    created_at = models.DateTimeField(db_default=ClockTimestamp())
    processed_at = models.DateTimeField(null=True, blank=True)
    seq = models.BigIntegerField(null=True, blank=True)
    contexts = ArrayField(models.CharField(max_length=100), null=True, blank=True)
    # NULL until published: "not scored yet" differs from any level.
    significance = models.CharField(max_length=8, null=True, blank=True)  # noqa: DJ001
    # Set on aggregate rows only (they exist per audience); NULL on captured changes,
    # which are redacted per audience when read.
    audience = models.CharField(max_length=8, null=True, blank=True)  # noqa: DJ001

    class Meta:
        db_table = "data_changes"
        indexes = [
            # Claiming: the oldest unprocessed changes. Partial, so the publisher's idle
            # poll is a probe of an (almost always) empty index.
            models.Index(
                fields=["capture_id"],
                name="data_changes_unprocessed",
                condition=Q(processed_at__isnull=True),
            ),
            # Retention pruning and timestamp cursors. Partial, like the seq index: a
            # capture inserts with both NULL and so touches neither index (the writers'
            # cost; the publisher pays when it sets them).
            models.Index(
                fields=["processed_at"],
                name="data_changes_processed_at",
                condition=Q(processed_at__isnull=False),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["seq"], name="data_changes_seq_unique", condition=Q(seq__isnull=False)
            ),
            models.CheckConstraint(
                condition=Q(change_type__in=["insert", "update", "delete"]),
                name="data_changes_change_type_valid",
            ),
            models.CheckConstraint(
                condition=Q(significance__isnull=True)
                | Q(significance__in=list(SIGNIFICANCE_LEVELS)),
                name="data_changes_significance_valid",
            ),
            models.CheckConstraint(
                condition=Q(seq__isnull=True) | Q(processed_at__isnull=False),
                name="data_changes_seq_only_when_processed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.change_type} {self.table_name} {self.record_id} seq={self.seq}"


class ChangeRoute(models.Model):
    """That `seq` was published to `context`, for the audiences in the bit mask."""

    pk = models.CompositePrimaryKey("context", "seq")
    context = models.CharField(max_length=100)
    seq = models.BigIntegerField()
    audiences = models.SmallIntegerField()

    class Meta:
        db_table = "change_routes"
        indexes = [models.Index(fields=["seq"], name="change_routes_seq")]

    def __str__(self) -> str:
        return f"{self.context} {self.seq}"


class ContextHead(models.Model):
    """The last seq published to one context for one audience: the next `prev_seq`."""

    pk = models.CompositePrimaryKey("context", "audience")
    context = models.CharField(max_length=100)
    audience = models.CharField(max_length=8)
    last_seq = models.BigIntegerField()

    class Meta:
        db_table = "context_heads"

    def __str__(self) -> str:
        return f"{self.context} {self.audience} {self.last_seq}"


class ChangeLogState(models.Model):
    """The single row naming the log's lineage (epoch), its head and its retained start."""

    id = models.SmallIntegerField(primary_key=True, default=1)
    epoch = models.CharField(max_length=64)
    head_seq = models.BigIntegerField(default=0)
    # Changes with seq at or below this were pruned: older cursors cannot be served.
    pruned_through_seq = models.BigIntegerField(default=0)
    last_published_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=ClockTimestamp())

    class Meta:
        db_table = "change_log_state"
        constraints = [models.CheckConstraint(condition=Q(id=1), name="change_log_state_single")]

    def __str__(self) -> str:
        return f"epoch {self.epoch} head {self.head_seq}"


class AggregateTotal(models.Model):
    """A running total the publisher keeps per scope, year and audience.

    scope is `platform` or `industry:<slug>`; year NULL holds the company count.
    """

    id = models.BigAutoField(primary_key=True)
    scope = models.CharField(max_length=100)
    year = models.IntegerField(null=True, blank=True)
    audience = models.CharField(max_length=8)
    total_tonnes = models.DecimalField(max_digits=24, decimal_places=3, default=0)
    scope1_tonnes = models.DecimalField(max_digits=24, decimal_places=3, default=0)
    scope2_tonnes = models.DecimalField(max_digits=24, decimal_places=3, default=0)
    scope3_tonnes = models.DecimalField(max_digits=24, decimal_places=3, default=0)
    reporting_companies = models.IntegerField(default=0)
    companies = models.IntegerField(default=0)

    class Meta:
        db_table = "aggregate_totals"
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "year", "audience"],
                name="aggregate_totals_unique",
                nulls_distinct=False,
            )
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.year} {self.audience}"
