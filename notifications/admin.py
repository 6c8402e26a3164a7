"""Notifications in the Django admin: read-only records with their receipts, and the
"broadcast an announcement" form (audited and rate limited like the REST endpoint)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from common.admin import ReadOnlyAdminMixin
from common.errors import ApplicationError
from notifications.announcements import (
    announcement_broadcast,
    announcement_context_resolve,
    broadcast_retry_after,
)
from notifications.forms import BroadcastForm
from notifications.models import NotificationReceipt, UpdateNotification

# Receipts shown on a notification's page: a broadcast to thousands of clients has a
# receipt each; the most recent ones tell the story.
RECEIPTS_SHOWN = 100


class NotificationReceiptInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Per-client delivery: attempts and acknowledgement (the latest RECEIPTS_SHOWN)."""

    model = NotificationReceipt
    fields = readonly_fields = ("client_key", "attempts", "last_attempt_at", "acknowledged_at")
    extra = 0
    can_delete = False

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)

        class Latest(formset):
            def get_queryset(self):
                if not hasattr(self, "_latest"):
                    latest = super().get_queryset().order_by("-last_attempt_at", "-id")
                    self._latest = latest[:RECEIPTS_SHOWN]
                    len(self._latest)  # evaluated once; forms index into the cache
                return self._latest

        return Latest


@admin.register(UpdateNotification)
class UpdateNotificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Notifications, read-only; new ones are announcements broadcast from here."""

    change_list_template = "admin/notifications/updatenotification/change_list.html"
    list_display = (
        "created_at",
        "level",
        "notification_type",
        "title",
        "context",
        "audience",
        "requires_ack",
        "delivery_attempts",
        "delivered_at",
    )
    list_filter = ("level", "notification_type", "audience", "requires_ack")
    search_fields = ("title", "body", "context")
    date_hierarchy = "created_at"
    readonly_fields = (
        "id",
        "notification_type",
        "level",
        "title",
        "body",
        "context",
        "audience",
        "seq",
        "change_id",
        "target_sessions",
        "requires_ack",
        "payload",
        "delivery_attempts",
        "delivered_at",
        "created_at",
        "expires_at",
    )
    inlines = [NotificationReceiptInline]

    def get_urls(self):
        broadcast = path(
            "broadcast/",
            self.admin_site.admin_view(self.broadcast_view),
            name="notifications_updatenotification_broadcast",
        )
        return [broadcast, *super().get_urls()]

    def broadcast_view(self, request: HttpRequest) -> HttpResponse:
        """Broadcast an announcement: every connected client, or one context."""
        if not request.user.is_staff or not self.has_view_permission(request):
            raise PermissionDenied
        form = BroadcastForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                context = announcement_context_resolve(
                    actor=request.user, context=data["context"] or None
                )
            except ApplicationError as exc:
                form.add_error("context", exc.detail)
            else:
                retry_after = broadcast_retry_after(user_id=request.user.pk)
                if retry_after is not None:
                    form.add_error(None, f"Too many broadcasts; retry in {retry_after} s.")
                else:
                    # The form's fields are the service's arguments; the context as resolved.
                    notification = announcement_broadcast(
                        actor=request.user, **{**data, "context": context}
                    )
                    self.message_user(
                        request,
                        f"Announcement “{notification.title}” sent to {context or 'every client'}.",
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(
                        reverse("admin:notifications_updatenotification_changelist")
                    )
        return TemplateResponse(
            request,
            "admin/notifications/updatenotification/broadcast.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Broadcast an announcement",
                "form": form,
            },
        )
