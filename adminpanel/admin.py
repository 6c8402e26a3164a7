import datetime as dt

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone

from adminpanel.maintenance import (
    maintenance_switch,
    maintenance_window_cancel,
    maintenance_window_schedule,
    maintenance_window_validate,
)
from adminpanel.models import (
    AuditEntry,
    EngagementEvent,
    MaintenanceState,
    MaintenanceWindow,
    RefreshMetric,
)
from common.admin import ReadOnlyAdminMixin
from common.errors import ApplicationError


class ReadOnlyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Rows written by the system only."""


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The audit log, read-only: entries are written by the actions they describe."""

    list_display = ("at", "actor_name", "action", "target")
    list_filter = ("action",)
    search_fields = ("actor_name", "target")
    date_hierarchy = "at"
    readonly_fields = ("at", "actor", "actor_name", "action", "target", "details")


class MaintenanceStateForm(forms.ModelForm):
    class Meta:
        model = MaintenanceState
        fields = ("active", "message", "until", "retry_after")

    def clean(self) -> dict:
        data = super().clean()
        until = data.get("until")
        if data.get("active") and until is not None and until <= timezone.now():
            raise forms.ValidationError("`until` is in the past.")
        return data


@admin.register(MaintenanceState)
class MaintenanceStateAdmin(admin.ModelAdmin):
    """The maintenance switch: one row, changed through maintenance_switch (audited, and
    every client is told), never saved directly."""

    form = MaintenanceStateForm
    fields = ("active", "message", "until", "retry_after", "window", "changed_at", "changed_by")
    readonly_fields = ("window", "changed_at", "changed_by")
    list_display = ("__str__", "message", "until", "changed_at", "changed_by")

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context=None):
        # One row: its change form is the switch.
        MaintenanceState.objects.get_or_create(id=1)
        return HttpResponseRedirect(reverse("admin:adminpanel_maintenancestate_change", args=[1]))

    def save_model(self, request, obj, form, change) -> None:
        try:
            maintenance_switch(
                actor=request.user,
                active=obj.active,
                message=obj.message,
                until=obj.until if obj.active else None,
                retry_after=obj.retry_after if obj.active else None,
            )
        except ApplicationError as exc:  # a race with the form's check: say so
            self.message_user(request, exc.detail, level=messages.ERROR)


class MaintenanceWindowForm(forms.ModelForm):
    class Meta:
        model = MaintenanceWindow
        fields = ("starts_at", "ends_at", "message", "retry_after", "announce_before")

    def clean(self) -> dict:
        data = super().clean()
        if self.instance.pk is None and data.get("starts_at") and data.get("ends_at"):
            try:
                maintenance_window_validate(
                    starts_at=data["starts_at"],
                    ends_at=data["ends_at"],
                    message=data.get("message") or "",
                )
            except ApplicationError as exc:
                raise forms.ValidationError(exc.detail) from None
        return data


@admin.register(MaintenanceWindow)
class MaintenanceWindowAdmin(admin.ModelAdmin):
    """Scheduled maintenance: planned here (audited), announced, switched on and off by
    the beat task; cancelled with the action, never deleted."""

    form = MaintenanceWindowForm
    list_display = ("starts_at", "ends_at", "message", "status", "announced_at", "created_by")
    fields = ("starts_at", "ends_at", "message", "retry_after", "announce_before")
    actions = ["cancel_windows"]
    date_hierarchy = "starts_at"

    def get_readonly_fields(self, request, obj=None):
        # A planned window is cancelled and planned again, not edited under the beat task.
        return self.fields if obj is not None else ()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_changeform_initial_data(self, request):
        start = timezone.now().replace(second=0, microsecond=0) + dt.timedelta(hours=2)
        return {
            "starts_at": start,
            "ends_at": start + dt.timedelta(minutes=30),
            "announce_before": dt.timedelta(seconds=settings.MAINTENANCE_ANNOUNCE_BEFORE_S),
        }

    def save_model(self, request, obj, form, change) -> None:
        if change:
            return
        window = maintenance_window_schedule(
            actor=request.user,
            starts_at=obj.starts_at,
            ends_at=obj.ends_at,
            message=obj.message,
            retry_after=obj.retry_after,
            announce_before=obj.announce_before,
        )
        obj.pk = window.pk

    @admin.action(description="Cancel the selected windows")
    def cancel_windows(self, request, queryset) -> None:
        cancelled = 0
        for window in queryset:
            try:
                maintenance_window_cancel(actor=request.user, window_id=window.pk)
                cancelled += 1
            except ApplicationError as exc:
                self.message_user(request, f"{window}: {exc.detail}", level=messages.WARNING)
        self.message_user(request, f"{cancelled} window(s) cancelled.")


@admin.register(RefreshMetric)
class RefreshMetricAdmin(ReadOnlyAdmin):
    list_display = ("at", "metric", "label", "value")
    list_filter = ("metric",)
    date_hierarchy = "at"


@admin.register(EngagementEvent)
class EngagementEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "kind", "client", "context", "transport")
    list_filter = ("kind", "transport")
    date_hierarchy = "at"
