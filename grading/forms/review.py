"""The review pages' forms: the agreement filters, the grader agreement's, the predictions export's."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator
from django.http import QueryDict

from grading.models import ModelVersion
from grading.selectors import review as review_selectors
from grading.selectors.review import REVIEW_DEFAULT_SORT, REVIEW_SORTS, ReviewFilters, Scale


def _grade_choices(scale: Scale, empty: str) -> list[tuple[str, str]]:
    return [("", empty)] + [(str(level.value), str(level)) for level in scale.levels]


# Filter dates outside these bounds mean nothing here, and the day after 9999-12-31 (the end of
# an inclusive range) does not exist: refused with a message instead of overflowing.
EARLIEST_FILTER_DATE = dt.date(1900, 1, 1)
LATEST_FILTER_DATE = dt.date(2999, 12, 31)


def _date_field(label: str) -> forms.DateField:
    """An optional date with the browser's date picker, between 1900 and 2999."""
    return forms.DateField(
        required=False,
        label=label,
        widget=forms.DateInput(
            attrs={
                "type": "date",
                "min": EARLIEST_FILTER_DATE.isoformat(),
                "max": LATEST_FILTER_DATE.isoformat(),
            }
        ),
        validators=[
            MinValueValidator(EARLIEST_FILTER_DATE, "Choose a date from 1900 on."),
            MaxValueValidator(LATEST_FILTER_DATE, "Choose a date before the year 3000."),
        ],
    )


class DateRangeForm(forms.Form):
    """For forms with optional ``date_from`` and ``date_to`` fields: refuse a range that ends
    before it starts."""

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError("The start date is after the end date.")
        return cleaned


class ModelVersionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: ModelVersion) -> str:
        return f"{obj.name} ({obj.get_state_display().lower()})"


class ReviewFilterForm(DateRangeForm):
    version = ModelVersionChoiceField(
        queryset=ModelVersion.objects.none(), required=False, label="Model version"
    )
    date_by = forms.ChoiceField(
        choices=[("uploaded", "Upload date"), ("predicted", "Prediction date")],
        required=False,
        label="Dates refer to",
    )
    date_from = _date_field("From")
    date_to = _date_field("To (inclusive)")
    grader = forms.ModelChoiceField(
        queryset=review_selectors.graders_with_grades(),
        required=False,
        empty_label="Any grader",
        label="Graded by",
    )
    confirmed = forms.TypedChoiceField(
        coerce=int, empty_value=None, required=False, label="Confirmed grade"
    )
    predicted = forms.TypedChoiceField(
        coerce=int, empty_value=None, required=False, label="Predicted grade"
    )
    disagreement = forms.TypedChoiceField(
        choices=[
            ("0", "All images"),
            ("1", "Disagree by ≥ 1 grade"),
            ("2", "Disagree by ≥ 2 grades"),
        ],
        coerce=int,
        empty_value=0,  # type: ignore[arg-type]  # Django takes any empty value; the stubs, str only
        required=False,
        label="Model vs confirmed",
    )
    include_training = forms.BooleanField(
        required=False,
        label="Include training images (optimistic)",
    )
    sort = forms.ChoiceField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, scale: Scale, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        version = cast(ModelVersionChoiceField, self.fields["version"])
        version.queryset = review_selectors.model_versions_with_predictions()
        default = review_selectors.model_version_default()
        # No "(default)" entry beside the same version's own entry: the default version is
        # simply the one selected when the request names none.
        version.empty_label = None if default else "No model version yet"
        if default is not None and self.is_bound and not self.data.get("version"):
            data = cast(QueryDict, self.data).copy()  # the view hands over request.GET
            data["version"] = str(default.pk)
            self.data = data
        for name in ("confirmed", "predicted"):
            cast(forms.TypedChoiceField, self.fields[name]).choices = _grade_choices(scale, "Any")
        cast(forms.ChoiceField, self.fields["sort"]).choices = [("", "")] + [
            (f"{prefix}{key}", key) for key in REVIEW_SORTS for prefix in ("", "-")
        ]

    def filters(self) -> ReviewFilters:
        data = self.cleaned_data
        return ReviewFilters(
            model_version=data["version"] or review_selectors.model_version_default(),
            date_field=data["date_by"] or "uploaded",
            date_from=data["date_from"],
            date_to=data["date_to"],
            grader=data["grader"],
            confirmed_grade=data["confirmed"],
            predicted_grade=data["predicted"],
            min_disagreement=data["disagreement"] or 0,
            sort=data["sort"] or REVIEW_DEFAULT_SORT,
            include_training=bool(data["include_training"]),
        )


class GraderAgreementForm(DateRangeForm):
    reference = forms.ChoiceField(
        choices=[
            ("final", "Final grade (leave out only grades that alone decided it)"),
            ("independent", "Independent reference only (imported or adjudicated by others)"),
        ],
        required=False,
        label="Compare with",
    )
    date_from = _date_field("Graded from")
    date_to = _date_field("To (inclusive)")


class PredictionExportForm(forms.Form):
    version = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=2**63 - 1,  # a larger id would overflow the database's integer
        error_messages={"invalid": "version must be a model version id."},
    )
    include_training = forms.BooleanField(required=False)
