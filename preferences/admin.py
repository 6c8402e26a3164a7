"""Django admin: refresh policies (edited through the same service as the API, so every
edit is validated, audited and reaches open connections at once) and a read-only view
of viewers' preferences."""

from __future__ import annotations

from django import forms
from django.contrib import admin

from common.admin import ReadOnlyAdminMixin
from preferences.models import CategoryPreference, RefreshPolicy, RefreshPreference, Transport
from preferences.policies import refresh_policies_update, refresh_policy_values_check
from preferences.selectors import POLICY_FIELDS


class RefreshPolicyForm(forms.ModelForm):
    allowed_transports = forms.MultipleChoiceField(
        choices=Transport.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text=RefreshPolicy._meta.get_field("allowed_transports").help_text,
    )

    class Meta:
        model = RefreshPolicy
        fields = ["user_type", "category", *POLICY_FIELDS]

    def clean(self):
        cleaned = super().clean()
        values = {name: cleaned.get(name) for name in POLICY_FIELDS}
        if values["allowed_transports"] is not None:
            values["allowed_transports"] = list(values["allowed_transports"])
        if not self.errors:
            for name, reasons in refresh_policy_values_check(values).items():
                for reason in reasons:
                    self.add_error(name if name in self.fields else None, reason)
        return cleaned


@admin.register(RefreshPolicy)
class RefreshPolicyAdmin(admin.ModelAdmin):
    form = RefreshPolicyForm
    list_display = (
        "user_type",
        "category",
        "realtime_allowed",
        "min_interval_ms",
        "default_interval_ms",
        "max_deliveries_per_minute",
        "debounce_ms",
        "transports",
        "updated_at",
    )
    list_filter = ("user_type", "category")
    ordering = ("user_type", "category")

    @admin.display(description="allowed transports")
    def transports(self, obj: RefreshPolicy) -> str:
        return ", ".join(obj.allowed_transports)

    def get_readonly_fields(self, request, obj=None):
        # A policy's pair is its identity; edit another row instead of moving this one.
        return ("user_type", "category", "updated_at") if obj else ("updated_at",)

    def has_delete_permission(self, request, obj=None) -> bool:
        # Deleting would silently fall back to the built-in default, unaudited.
        return False

    def save_model(self, request, obj: RefreshPolicy, form, change: bool) -> None:
        """Through the service: validated, audited (via "admin"), announced."""
        item = {"user_type": obj.user_type, "category": obj.category}
        item.update({name: form.cleaned_data[name] for name in POLICY_FIELDS})
        item["allowed_transports"] = list(item["allowed_transports"])
        refresh_policies_update(actor=request.user, document={"policies": [item]}, via="admin")
        saved = RefreshPolicy.objects.get(user_type=obj.user_type, category=obj.category)
        obj.pk = saved.pk
        obj.updated_at = saved.updated_at


class CategoryPreferenceInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = CategoryPreference
    extra = 0
    fields = ("category", "mode")
    readonly_fields = ("category", "mode")
    can_delete = False


# What a viewer chose, listed and shown alike.
PREFERENCE_SETTINGS = (
    "paused",
    "notification_threshold",
    "quiet_hours_start",
    "quiet_hours_end",
    "quiet_hours_timezone",
    "updated_at",
)


@admin.register(RefreshPreference)
class RefreshPreferenceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Viewers' own choices: for support, read-only (viewers change them themselves)."""

    list_display = ("__str__", "user", *PREFERENCE_SETTINGS)
    list_filter = ("paused", "notification_threshold")
    search_fields = ("user__username",)
    inlines = [CategoryPreferenceInline]
    readonly_fields = ("user", "session", *PREFERENCE_SETTINGS)
