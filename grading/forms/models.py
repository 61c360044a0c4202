"""The model registry's forms: comparison and retraining."""

from __future__ import annotations

from django import forms

from grading.services import model_versions as version_services


class ModelCompareForm(forms.Form):
    a = forms.IntegerField(required=False, min_value=1)
    b = forms.IntegerField(required=False, min_value=1)


class RetrainForm(forms.Form):
    mode = forms.ChoiceField(
        choices=list(version_services.TRAINING_MODES.items()), required=False, initial="head"
    )


class ActivationConfirmForm(forms.Form):
    """The confirmation page's POST. ``accept_worse``: the second, explicit confirmation needed
    when the paired comparison finds the version worse than the active one."""

    accept_worse = forms.BooleanField(required=False)
    next = forms.CharField(required=False, max_length=500)
