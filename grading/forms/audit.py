"""The audit trail's filters: who, which action, on what kind of record, between which dates."""

from __future__ import annotations

import datetime as dt
from typing import Any

from auditlog.models import LogEntry
from django import forms
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType

from grading.forms.review import _date_field


class _UserChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return str(obj.get_username())


class _KindChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return str(obj.name)


class AuditFilterForm(forms.Form):
    actor = _UserChoice(
        queryset=User.objects.order_by("username"),
        required=False,
        label="Who",
        empty_label="Anyone",
    )
    action = forms.TypedChoiceField(
        choices=[("", "Any action"), *LogEntry.Action.choices],
        coerce=int,
        empty_value=None,
        required=False,
        label="Action",
    )
    content_type = _KindChoice(
        # Only the kinds of record the trail holds: a list of every model would hide them.
        queryset=ContentType.objects.filter(
            pk__in=LogEntry.objects.order_by().values("content_type_id").distinct()
        ).order_by("model"),
        required=False,
        label="Record",
        empty_label="Any record",
    )
    object_pk = forms.CharField(required=False, max_length=255, label="Record id")
    date_from = _date_field("From")
    date_to = _date_field("To")
    page = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if isinstance(start, dt.date) and isinstance(end, dt.date) and start > end:
            raise forms.ValidationError("The start date is after the end date.")
        return cleaned
