"""The Django admin's broadcast form: the same checks as the REST endpoint."""

from __future__ import annotations

from django import forms

from notifications.models import BODY_MAX_LENGTH, TITLE_MAX_LENGTH, NotificationLevel
from notifications.validators import body_validator, title_validator


class BroadcastForm(forms.Form):
    """An announcement to every connected client, or to the followers of one context."""

    level = forms.ChoiceField(choices=NotificationLevel.choices, initial=NotificationLevel.INFO)
    title = forms.CharField(max_length=TITLE_MAX_LENGTH, validators=[title_validator])
    body = forms.CharField(
        max_length=BODY_MAX_LENGTH, validators=[body_validator], widget=forms.Textarea
    )
    context = forms.CharField(
        required=False,
        max_length=100,
        help_text="Empty: every client. Else one context, e.g. industry:steel or company:<uuid>.",
    )
    requires_ack = forms.BooleanField(
        required=False,
        label="Requires acknowledgement",
        help_text="Delivered again on every reconnect until each client acknowledges it.",
    )
