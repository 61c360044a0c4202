"""The workbench's grading settings form."""

from __future__ import annotations

from typing import Any

from django import forms

from grading.models import WorkbenchSettings
from grading.services.workbench import EDITABLE_FIELDS


class WorkbenchSettingsForm(forms.ModelForm):
    grades_required = forms.TypedChoiceField(
        coerce=int,
        choices=[
            (1, "1 grade (single grader)"),
            (2, "2 independent grades (adjudicate disagreements)"),
        ],
        widget=forms.RadioSelect,
    )
    claim_minutes = forms.IntegerField(min_value=1, max_value=240)

    class Meta:
        model = WorkbenchSettings
        fields = list(EDITABLE_FIELDS)
        labels = {
            "blind_first_grader": "Blind reading (hide the model until each reader's grade is saved)",
            "queue_order": "Default queue order",
            "claim_minutes": "Claim lease (minutes)",
            "auto_retrain_after": "Retrain automatically after this many new confirmed grades (0: off)",
            "allow_uncertain_order_when_blind": "Allow “Most uncertain first” during blind reading",
            "allow_self_adjudication": "Allow self-adjudication",
        }

    # Declared fields ignore Meta.help_texts: every field gets its help here.
    setting_help = {
        "grades_required": (
            "With two, two clinicians grade each image without seeing each other's grade: "
            "agreement confirms it, disagreement sends it to a reviewer's adjudication queue. "
            "Going back to one settles the pending images that already have a grade."
        ),
        "blind_first_grader": (
            "Every clinician who grades an image independently (the first, the second, an "
            "admin who grades) sees neither the model's grade, its probabilities nor its "
            "activation map until their own grade is saved, so the model cannot anchor it. "
            "Reviewers who do not grade see the model."
        ),
        "queue_order": (
            "The order of the worklist and of Next image. Most uncertain first serves the "
            "images the active model is least sure about (its grades then teach it the "
            "most); each clinician can choose another order for themselves on the worklist. "
            "During blind reading it is refused unless allowed below."
        ),
        "claim_minutes": (
            "Opening an image reserves it for that clinician this long (1-240 minutes), so "
            "two clinicians are not served the same image when only one grade is missing."
        ),
        "auto_retrain_after": (
            "Counted since the last model was trained. An automatic retrain makes a "
            "candidate version; an admin still compares and activates it."
        ),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, text in self.setting_help.items():
            self.fields[name].help_text = text

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if (
            cleaned.get("queue_order") == WorkbenchSettings.QueueOrder.UNCERTAIN
            and cleaned.get("blind_first_grader")
            and not cleaned.get("allow_uncertain_order_when_blind")
        ):
            self.add_error(
                "queue_order",
                "“Most uncertain first” reveals the model's confidence to blind readers: allow "
                "it explicitly below, or choose another order.",
            )
        return cleaned
