"""JSON shapes of the dashboard API, and validation of its query parameters."""

from __future__ import annotations

import re

from django.conf import settings
from rest_framework import serializers

from emissions.models import (
    BENCHMARK_FIELDS,
    EMISSION_RECORD_FIELDS,
    Company,
    EmissionRecord,
    Industry,
    IndustryBenchmark,
    VerificationStatus,
)

# Longest accepted search string; names are at most 300 characters.
SEARCH_MAX_LENGTH = 100


class FieldSelectionMixin:
    """Drops every field not named in the `fields` context entry (`?fields=a,b`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        selected = self.context.get("fields")
        if selected:
            for name in set(self.fields) - set(selected):
                self.fields.pop(name)


class EmissionRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = EmissionRecord
        fields = ["id", *EMISSION_RECORD_FIELDS, "updated_at"]


class CompanySerializer(FieldSelectionMixin, serializers.ModelSerializer):
    industry = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    industry_name = serializers.CharField(source="industry.name", read_only=True)

    class Meta:
        model = Company
        fields = [
            "id",
            "name",
            "country",
            "industry",
            "industry_name",
            "is_public",
            "verification_status",
            "data_quality_score",
            "latest_year",
            "latest_total_tonnes",
            "created_at",
            "updated_at",
        ]


class CompanyDetailSerializer(CompanySerializer):
    emissions = EmissionRecordSerializer(many=True, read_only=True, source="visible_records")

    class Meta(CompanySerializer.Meta):
        fields = [*CompanySerializer.Meta.fields, "emissions"]


COMPANY_LIST_FIELDS = CompanySerializer.Meta.fields
COMPANY_DETAIL_FIELDS = CompanyDetailSerializer.Meta.fields


class IndustrySerializer(serializers.ModelSerializer):
    company_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Industry
        fields = ["id", "slug", "name", "sector", "company_count"]


class IndustryBenchmarkSerializer(serializers.ModelSerializer):
    class Meta:
        model = IndustryBenchmark
        fields = ["id", *BENCHMARK_FIELDS, "computed_at"]


def parse_fields(raw: str | None, allowed: list[str]) -> list[str] | None:
    """`fields=a,b` as a list, refusing names the endpoint does not have."""
    if raw is None:
        return None
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if not names:
        raise serializers.ValidationError({"fields": "Name at least one field."})
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise serializers.ValidationError(
            {"fields": f"Unknown fields: {', '.join(unknown)}. Allowed: {', '.join(allowed)}."}
        )
    return names


class CompanyListQuerySerializer(serializers.Serializer):
    """The directory's query parameters; anything malformed is a 400."""

    ORDERINGS = {
        "name": ("name", "id"),
        "-name": ("-name", "-id"),
        "total_emissions": ("total_sort", "id"),
        "-total_emissions": ("-total_sort", "-id"),
        # Newest first (the overview's "newest companies"; index companies_created).
        "-created_at": ("-created_at", "-id"),
    }

    industry = serializers.SlugField(required=False, max_length=80)
    country = serializers.CharField(required=False, max_length=2, min_length=2)
    verification_status = serializers.ChoiceField(
        required=False, choices=VerificationStatus.choices
    )
    search = serializers.CharField(
        required=False, max_length=SEARCH_MAX_LENGTH, trim_whitespace=True
    )
    ordering = serializers.ChoiceField(required=False, choices=list(ORDERINGS), default="name")
    page_size = serializers.IntegerField(
        required=False, min_value=1, max_value=settings.API_MAX_PAGE_SIZE
    )
    fields = serializers.CharField(required=False, max_length=1000)
    cursor = serializers.CharField(required=False, max_length=1000)

    def validate_country(self, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z]{2}", value):
            raise serializers.ValidationError("Use an ISO 3166-1 alpha-2 code such as DE.")
        return value.upper()

    def validate_fields(self, value: str) -> list[str] | None:
        return parse_fields(value, COMPANY_LIST_FIELDS)


class FieldsQuerySerializer(serializers.Serializer):
    fields = serializers.CharField(required=False, max_length=1000)

    def validate_fields(self, value: str) -> list[str] | None:
        return parse_fields(value, self.context["allowed_fields"])


class PageQuerySerializer(serializers.Serializer):
    page_size = serializers.IntegerField(
        required=False, min_value=1, max_value=settings.API_MAX_PAGE_SIZE
    )
    cursor = serializers.CharField(required=False, max_length=1000)


class OverviewQuerySerializer(serializers.Serializer):
    year = serializers.IntegerField(required=False, min_value=1990, max_value=2100)


class RecentChangesQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        required=False, min_value=1, max_value=settings.RECENT_CHANGES_MAX, default=20
    )


class NoQuerySerializer(serializers.Serializer):
    """For endpoints that take no query parameters at all."""


class YearTotalsSerializer(serializers.Serializer):
    """One year's emissions over the companies the user may see (OpenAPI shape)."""

    year = serializers.IntegerField()
    total_tonnes = serializers.FloatField()
    scope1_tonnes = serializers.FloatField()
    scope2_tonnes = serializers.FloatField()
    scope3_tonnes = serializers.FloatField()
    reporting_companies = serializers.IntegerField()


class IndustryDetailSerializer(IndustrySerializer):
    """`GET /api/industries/<slug>/` (OpenAPI shape)."""

    totals_by_year = YearTotalsSerializer(many=True)
    benchmarks = IndustryBenchmarkSerializer(many=True)
    seq = serializers.IntegerField()
    epoch = serializers.CharField()

    class Meta(IndustrySerializer.Meta):
        fields = [*IndustrySerializer.Meta.fields, "totals_by_year", "benchmarks", "seq", "epoch"]


class OverviewTotalsSerializer(serializers.Serializer):
    companies = serializers.IntegerField()
    reporting_companies = serializers.IntegerField()
    total_tonnes = serializers.FloatField()
    scope1_tonnes = serializers.FloatField()
    scope2_tonnes = serializers.FloatField()
    scope3_tonnes = serializers.FloatField()
    industries = serializers.IntegerField()


class OverviewIndustrySerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    sector = serializers.CharField()
    company_count = serializers.IntegerField()
    reporting_companies = serializers.IntegerField()
    total_tonnes = serializers.FloatField()


class TopEmitterSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    record_id = serializers.UUIDField()
    name = serializers.CharField()
    country = serializers.CharField()
    industry = serializers.CharField()
    year = serializers.IntegerField()
    total_tonnes = serializers.FloatField()


class OverviewSerializer(serializers.Serializer):
    """`GET /api/overview/` (OpenAPI shape)."""

    year = serializers.IntegerField(allow_null=True)
    totals = OverviewTotalsSerializer()
    by_industry = OverviewIndustrySerializer(many=True)
    top_emitters = TopEmitterSerializer(many=True)
    seq = serializers.IntegerField()
    epoch = serializers.CharField()


class RecentChangesSerializer(serializers.Serializer):
    """`GET /api/overview/changes/` (OpenAPI shape): change items as PROTOCOL.md defines
    them, newest first, and the companies they name."""

    changes = serializers.ListField(child=serializers.DictField())
    companies = serializers.DictField(child=serializers.DictField())
    seq = serializers.IntegerField()
    epoch = serializers.CharField()
