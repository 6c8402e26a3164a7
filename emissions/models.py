"""The tracked domain: industries, companies, their yearly emissions and benchmarks.

Constraints, defaults and the generated total live in the database, so rows written by
raw SQL, imports or `COPY` obey the same rules as ORM saves.
"""

import uuid
from typing import Any, ClassVar

from django.contrib.postgres.functions import RandomUUID
from django.db import models
from django.db.models import F, Q, Value
from django.db.models.functions import Cast, Coalesce, Now

from changes.capture import CaptureSpec, capture_triggers


class VerificationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    VERIFIED = "verified", "Verified"
    REJECTED = "rejected", "Rejected"


VERIFICATION_VALUES = [value for value, _ in VerificationStatus.choices]

# Emission figures are stored in tonnes CO2e with three decimals: the largest emitters
# report around 10^9 t, so 15 digits before the point leave ample room.
TONNES = {"max_digits": 18, "decimal_places": 3}

# Sort key of "by total emissions": companies without any record sort below every total.
TOTAL_SORT = Coalesce(
    F("latest_total_tonnes"), Value(-1), output_field=models.DecimalField(**TONNES)
)

# What an editor sets on a company, in table order: what its changes carry and what the
# demo data loads (the id, derived totals and timestamps come from elsewhere).
COMPANY_PROFILE_COLUMNS = (
    "name",
    "country",
    "industry_id",
    "is_public",
    "verification_status",
    "data_quality_score",
)
# The same by field name (the industry's column is industry_id), as the API and the
# admin's company list show them.
COMPANY_PROFILE_FIELDS = tuple(column.removesuffix("_id") for column in COMPANY_PROFILE_COLUMNS)

# A record's reported figures, in the order the API, the admin and its captured changes
# (after company_id) all list them.
EMISSION_RECORD_FIELDS = (
    "year",
    "scope1_tonnes",
    "scope2_tonnes",
    "scope3_tonnes",
    "total_tonnes",
    "source",
    "verification_status",
)

# A benchmark's key within its industry and its distribution, in the order the API, the
# admin and its captured changes (after industry_id) list them.
BENCHMARK_FIELDS = ("year", "metric", "p25", "median", "p75", "mean", "company_count")

COMPANY_CAPTURE = CaptureSpec(
    table="companies",
    entity="company",
    # latest_* are derived from emission records (their own changes carry them);
    # timestamps move on every save and would make no-op saves look like changes.
    columns=COMPANY_PROFILE_COLUMNS,
    extra_columns=("created_at", "updated_at"),
    keys={"company_id": "r.id", "industry_id": "r.industry_id", "is_public": "r.is_public"},
    update_keys=(
        ("old_industry_id", "o.industry_id"),
        ("old_is_public", "o.is_public"),
        ("row", "CASE WHEN o.is_public IS DISTINCT FROM r.is_public THEN {row} END"),
        # When visibility or industry moves, the company's records move with it between
        # aggregates: their values, read under the row locks taken just before.
        (
            "records",
            "CASE WHEN (o.is_public, o.industry_id) IS DISTINCT FROM (r.is_public, r.industry_id)"
            " THEN (SELECT coalesce(jsonb_agg(jsonb_build_object("
            "'year', er.year, 'total_tonnes', er.total_tonnes,"
            " 'scope1_tonnes', er.scope1_tonnes, 'scope2_tonnes', er.scope2_tonnes,"
            " 'scope3_tonnes', er.scope3_tonnes,"
            " 'verification_status', er.verification_status)), '[]'::jsonb)"
            " FROM emission_records er WHERE er.company_id = r.id) END",
        ),
    ),
)

# Serialises a company's visibility or industry move with every concurrent write to
# emission records, so the record values captured with the move are exactly those the
# running totals hold: the move waits for record writers in flight and holds new ones
# back until it commits (they then capture the company as it is after the move). Row
# locks would not do: a concurrently *inserted* record has no row to lock yet. Moves are
# rare (an editor's decision); record writes pause for one short transaction.
COMPANY_MOVE_LOCK = """
    IF EXISTS (SELECT 1 FROM new_rows r JOIN old_rows o ON o.id = r.id
                WHERE (o.is_public, o.industry_id) IS DISTINCT FROM (r.is_public, r.industry_id))
    THEN
        LOCK TABLE emission_records IN SHARE ROW EXCLUSIVE MODE;
    END IF;
"""

EMISSION_RECORD_CAPTURE = CaptureSpec(
    table="emission_records",
    entity="emission_record",
    columns=("company_id", *EMISSION_RECORD_FIELDS),
    extra_columns=("updated_at",),
    join="LEFT JOIN companies j ON j.id = {r}.company_id",
    # The aggregate inputs travel whole: a status change alone still needs the totals.
    keys={
        "company_id": "r.company_id",
        "industry_id": "j.industry_id",
        "company_public": "j.is_public",
        "year": "r.year",
        "total_tonnes": "r.total_tonnes",
        "scope1_tonnes": "r.scope1_tonnes",
        "scope2_tonnes": "r.scope2_tonnes",
        "scope3_tonnes": "r.scope3_tonnes",
        "verification_status": "r.verification_status",
    },
    update_keys=(
        (
            "row",
            "CASE WHEN (o.verification_status = 'rejected')"
            " IS DISTINCT FROM (r.verification_status = 'rejected')"
            " OR o.company_id IS DISTINCT FROM r.company_id THEN {row} END",
        ),
        # Only for a record moved between companies: where its contribution was.
        (
            "old_industry_id",
            "CASE WHEN o.company_id IS DISTINCT FROM r.company_id"
            " THEN (SELECT oc.industry_id FROM companies oc WHERE oc.id = o.company_id) END",
        ),
        (
            "old_company_public",
            "CASE WHEN o.company_id IS DISTINCT FROM r.company_id"
            " THEN (SELECT oc.is_public FROM companies oc WHERE oc.id = o.company_id) END",
        ),
    ),
)

BENCHMARK_CAPTURE = CaptureSpec(
    table="industry_benchmarks",
    entity="industry_benchmark",
    columns=("industry_id", *BENCHMARK_FIELDS, "impact"),
    extra_columns=("computed_at",),
    keys={"industry_id": "r.industry_id", "year": "r.year", "metric": "r.metric"},
)


class TrackedModel(models.Model):
    """A row of the tracked domain: a UUID key and timestamps the database can fill in too."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=RandomUUID())

    # Stamped with the database clock on every ORM save, as raw SQL writes are by the
    # column default, so a row's times mean the same however it was written.
    stamped_on_save: ClassVar[tuple[str, ...]] = ()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        for name in self.stamped_on_save:
            setattr(self, name, Now())
        super().save(*args, **kwargs)


class Industry(TrackedModel):
    """An industry that companies belong to and are benchmarked within."""

    slug = models.SlugField(max_length=80, unique=True)
    name = models.CharField(max_length=200)
    sector = models.CharField(max_length=100)

    class Meta:
        db_table = "industries"
        ordering = ["name"]
        verbose_name_plural = "industries"
        constraints = [
            models.CheckConstraint(
                condition=Q(slug__regex=r"^[a-z0-9]+(-[a-z0-9]+)*$"), name="industries_slug_format"
            ),
            models.CheckConstraint(condition=~Q(name=""), name="industries_name_not_empty"),
        ]

    def __str__(self) -> str:
        return self.name


class Company(TrackedModel):
    """A company whose emissions are published on the platform."""

    name = models.CharField(max_length=300)
    # ISO 3166-1 alpha-2, upper case.
    country = models.CharField(max_length=2)
    industry = models.ForeignKey(Industry, on_delete=models.PROTECT, related_name="companies")
    is_public = models.BooleanField(default=True, db_default=True)
    verification_status = models.CharField(
        max_length=10,
        choices=VerificationStatus.choices,
        default=VerificationStatus.PENDING,
        db_default=VerificationStatus.PENDING,
    )
    data_quality_score = models.DecimalField(
        max_digits=5, decimal_places=2, default=0, db_default=0
    )
    # Latest non-rejected year and its total: derived data the publisher keeps (in the
    # transaction that publishes the record changes that move it), so directory ordering
    # by emissions is one index scan and writers do not pay for it.
    latest_year = models.IntegerField(null=True, blank=True, editable=False)
    latest_total_tonnes = models.DecimalField(null=True, blank=True, editable=False, **TONNES)
    created_at = models.DateTimeField(default=None, db_default=Now(), editable=False)
    updated_at = models.DateTimeField(default=None, db_default=Now(), editable=False)
    stamped_on_save = ("updated_at",)

    class Meta:
        db_table = "companies"
        triggers = capture_triggers(COMPANY_CAPTURE, before_update=COMPANY_MOVE_LOCK)
        ordering = ["name"]
        verbose_name_plural = "companies"
        constraints = [
            models.CheckConstraint(
                condition=Q(verification_status__in=VERIFICATION_VALUES),
                name="companies_verification_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(data_quality_score__gte=0) & Q(data_quality_score__lte=100),
                name="companies_data_quality_0_100",
            ),
            models.CheckConstraint(
                condition=Q(country__regex=r"^[A-Z]{2}$"), name="companies_country_iso2"
            ),
            models.CheckConstraint(condition=~Q(name=""), name="companies_name_not_empty"),
        ]
        indexes = [
            models.Index(fields=["industry", "name"], name="companies_industry_name"),
            models.Index(fields=["country"], name="companies_country"),
            models.Index(fields=["verification_status"], name="companies_verification"),
            # The directory's "by emissions" ordering (COALESCE puts companies with no
            # records last); the expression must match emissions.views.TOTAL_SORT.
            models.Index(TOTAL_SORT, "id", name="companies_total_sort"),
            models.Index("industry", TOTAL_SORT, "id", name="companies_industry_total_sort"),
            models.Index(fields=["name", "id"], name="companies_name_id"),
            models.Index(F("created_at").desc(), name="companies_created"),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        # Set once, by the same clock as updated_at.
        if self.created_at is None:
            self.created_at = Now()
        super().save(*args, **kwargs)


class EmissionRecord(TrackedModel):
    """One company's reported emissions for one year, by scope."""

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="emission_records")
    year = models.IntegerField()
    scope1_tonnes = models.DecimalField(default=0, db_default=0, **TONNES)
    scope2_tonnes = models.DecimalField(default=0, db_default=0, **TONNES)
    scope3_tonnes = models.DecimalField(default=0, db_default=0, **TONNES)
    total_tonnes = models.GeneratedField(
        expression=F("scope1_tonnes") + F("scope2_tonnes") + F("scope3_tonnes"),
        output_field=models.DecimalField(**TONNES),
        db_persist=True,
    )
    source = models.CharField(max_length=200, default="", db_default="", blank=True)
    verification_status = models.CharField(
        max_length=10,
        choices=VerificationStatus.choices,
        default=VerificationStatus.PENDING,
        db_default=VerificationStatus.PENDING,
    )
    updated_at = models.DateTimeField(default=None, db_default=Now(), editable=False)
    stamped_on_save = ("updated_at",)

    class Meta:
        db_table = "emission_records"
        ordering = ["company_id", "year"]
        constraints = [
            models.UniqueConstraint(
                fields=["company", "year"], name="emission_records_company_year"
            ),
            models.CheckConstraint(
                condition=Q(scope1_tonnes__gte=0)
                & Q(scope2_tonnes__gte=0)
                & Q(scope3_tonnes__gte=0),
                name="emission_records_scopes_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(year__gte=1990) & Q(year__lte=2100), name="emission_records_year_range"
            ),
            models.CheckConstraint(
                condition=Q(verification_status__in=VERIFICATION_VALUES),
                name="emission_records_verification_valid",
            ),
        ]
        indexes = [
            models.Index("year", F("total_tonnes").desc(), name="emission_records_year_total"),
        ]
        triggers = capture_triggers(EMISSION_RECORD_CAPTURE)

    def __str__(self) -> str:
        return f"{self.company_id} {self.year}"


class IndustryBenchmark(TrackedModel):
    """A distribution of one metric over an industry's companies for one year."""

    industry = models.ForeignKey(Industry, on_delete=models.CASCADE, related_name="benchmarks")
    year = models.IntegerField()
    metric = models.CharField(max_length=64)
    p25 = models.DecimalField(**TONNES)
    median = models.DecimalField(**TONNES)
    p75 = models.DecimalField(**TONNES)
    mean = models.DecimalField(**TONNES)
    company_count = models.IntegerField()
    # How the last recompute moved this benchmark (median shift, companies that crossed
    # a percentile), so its change item explains itself.
    impact = models.JSONField(
        default=dict, db_default=Cast(Value("{}"), models.JSONField()), blank=True
    )
    computed_at = models.DateTimeField(default=None, db_default=Now(), editable=False)
    stamped_on_save = ("computed_at",)

    class Meta:
        db_table = "industry_benchmarks"
        triggers = capture_triggers(BENCHMARK_CAPTURE)
        ordering = ["industry_id", "year", "metric"]
        constraints = [
            models.UniqueConstraint(
                fields=["industry", "year", "metric"], name="industry_benchmarks_unique"
            ),
            models.CheckConstraint(
                condition=Q(p25__lte=F("median")) & Q(median__lte=F("p75")),
                name="industry_benchmarks_percentiles_ordered",
            ),
            models.CheckConstraint(
                condition=Q(company_count__gte=0), name="industry_benchmarks_count_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(year__gte=1990) & Q(year__lte=2100),
                name="industry_benchmarks_year_range",
            ),
            models.CheckConstraint(condition=~Q(metric=""), name="industry_benchmarks_metric_set"),
        ]

    def __str__(self) -> str:
        return f"{self.industry_id} {self.year} {self.metric}"
