"""The upload form: the visit the photographs belong to."""

from __future__ import annotations

import datetime as dt

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.utils import timezone

from grading.forms.review import EARLIEST_FILTER_DATE
from grading.models import Image


class UploadForm(forms.Form):
    patient_id = forms.CharField(
        label="Patient ID (pseudonym)",
        max_length=64,
        validators=[
            RegexValidator(
                r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                "Use letters, digits, dot, dash or underscore (a pseudonym, never a name).",
            )
        ],
    )
    eye = forms.ChoiceField(choices=Image.Eye.choices, initial=Image.Eye.RIGHT)
    acquired_on = forms.DateField(
        label="Date taken",
        required=False,
        # ISO format: what an <input type="date"> shows and sends, whatever the locale.
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )

    def clean_acquired_on(self) -> dt.date | None:
        value = self.cleaned_data.get("acquired_on")
        if value is not None and value > timezone.localdate():
            raise ValidationError("The date a photograph was taken cannot be in the future.")
        if value is not None and value < EARLIEST_FILTER_DATE:
            # The review filters start in 1900: an earlier date is a typing slip, and a photograph
            # dated so could never be found by date.
            raise ValidationError("Choose a date from 1900 on.")
        return value
