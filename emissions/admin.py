"""Django admin for the tracked domain: staff can inspect and correct any row."""

from django.contrib import admin

from emissions.models import (
    BENCHMARK_FIELDS,
    COMPANY_PROFILE_FIELDS,
    EMISSION_RECORD_FIELDS,
    Company,
    EmissionRecord,
    Industry,
    IndustryBenchmark,
)


@admin.register(Industry)
class IndustryAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "sector"]
    search_fields = ["name", "slug", "sector"]
    list_filter = ["sector"]


class EmissionRecordInline(admin.TabularInline):
    model = EmissionRecord
    extra = 0
    fields = EMISSION_RECORD_FIELDS
    readonly_fields = ["total_tonnes"]


@admin.register(Company)
class CompanyAdmin(admin.ModelAdmin):
    list_display = [*COMPANY_PROFILE_FIELDS, "latest_total_tonnes"]
    list_filter = ["is_public", "verification_status", "industry"]
    search_fields = ["name"]
    list_select_related = ["industry"]
    readonly_fields = ["latest_year", "latest_total_tonnes", "created_at", "updated_at"]
    inlines = [EmissionRecordInline]
    # 100,000 companies: an exact count on every changelist page is wasted work.
    show_full_result_count = False


@admin.register(EmissionRecord)
class EmissionRecordAdmin(admin.ModelAdmin):
    list_display = ["company", "year", "total_tonnes", "verification_status", "updated_at"]
    list_filter = ["year", "verification_status"]
    search_fields = ["company__name"]
    raw_id_fields = ["company"]
    list_select_related = ["company"]
    readonly_fields = ["total_tonnes", "updated_at"]
    show_full_result_count = False


@admin.register(IndustryBenchmark)
class IndustryBenchmarkAdmin(admin.ModelAdmin):
    list_display = ["industry", *BENCHMARK_FIELDS]
    list_filter = ["metric", "year", "industry"]
    readonly_fields = ["computed_at"]
