"""The grading protocol's forms: the certification set, the quality check, the protocol settings."""

from __future__ import annotations

from django import forms

from grading.models import WorkbenchSettings
from grading.services.workbench import PROTOCOL_FIELDS


class CertificationBuildForm(forms.Form):
    size = forms.IntegerField(min_value=1, max_value=1000, initial=100)
    source = forms.CharField(required=False, max_length=255, help_text="e.g. import:demo")


class QualityDecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("pass", "pass"), ("ungradable", "ungradable")])


class ProtocolSettingsForm(forms.ModelForm):
    class Meta:
        model = WorkbenchSettings
        fields = list(PROTOCOL_FIELDS)
        labels = {
            "rubric_enabled": "Lesion rubric on the grading page (grade derived by the 4-2-1 rule)",
            "certification_mode": "Certification images are served",
            "certification_gates_confirmation": "Grades of clinicians not yet certified do not confirm images",
            "certification_min_qwk": "Pass: minimum QWK against the reference",
            "certification_min_sensitivity": "Pass: minimum referable sensitivity",
            "certification_min_specificity": "Pass: minimum referable specificity",
            "certification_min_exact": "Pass: minimum exact agreement",
            "quality_gate_enabled": "Send photographs below the quality threshold to a check",
            "quality_min_focus": "Minimum focus (variance of the Laplacian at 512 px)",
            "quality_max_clipped": "Maximum share of the fundus clipped dark or bright",
            "quality_min_coverage": "Minimum share of the frame inside the fundus",
            "quality_min_resolution": "Minimum short side (pixels)",
        }
