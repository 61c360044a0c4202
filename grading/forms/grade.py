"""The grade form (grading and adjudication pages), with the lesion rubric."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError

from grading.models import Grade, GradeLevel
from grading.services import grades as grade_services
from mlcore.data.rubric import QUADRANTS, Findings, icdr_grade_derive

HAEMORRHAGE_LEVELS = [(0, "–"), (1, "+"), (2, "20+")]  # none, present, 20 or more
RUBRIC_FIELD_PREFIX = "f_"  # every rubric finding's field name starts so


class GradeForm(forms.Form):
    grade = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    ungradable = forms.BooleanField(required=False)
    macular_oedema = forms.BooleanField(required=False)
    notes = forms.CharField(
        required=False, max_length=grade_services.MAX_NOTES_LENGTH, widget=forms.Textarea
    )
    # The lesion rubric (mlcore.data.rubric): the page sends rubric=on when the grader used it.
    rubric = forms.BooleanField(required=False, widget=forms.HiddenInput)
    f_microaneurysms = forms.BooleanField(required=False)
    f_nv_disc = forms.BooleanField(required=False)
    f_nv_elsewhere = forms.BooleanField(required=False)
    f_vitreous = forms.BooleanField(required=False)
    f_exudates = forms.BooleanField(required=False)
    f_exudates_fovea = forms.BooleanField(required=False)
    f_cws = forms.BooleanField(required=False)
    f_laser = forms.BooleanField(required=False)
    override_reason = forms.CharField(
        required=False, max_length=grade_services.MAX_NOTES_LENGTH, widget=forms.Textarea
    )
    # Why the reader corrects a saved grade (a request for the adjudicator needs one).
    correction_reason = forms.CharField(
        required=False, max_length=grade_services.MAX_NOTES_LENGTH, widget=forms.Textarea
    )

    def __init__(self, *args: Any, levels: list[GradeLevel], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        grade = cast(forms.TypedChoiceField, self.fields["grade"])
        grade.choices = [("", "—")] + [(level.value, str(level)) for level in levels]
        for quadrant in QUADRANTS:
            self.fields[f"f_haem_{quadrant}"] = forms.TypedChoiceField(
                coerce=int,
                choices=HAEMORRHAGE_LEVELS,
                required=False,
                empty_value=0,  # type: ignore[arg-type]  # Django takes any empty value; the stubs, str only
            )
            self.fields[f"f_vb_{quadrant}"] = forms.BooleanField(required=False)
            self.fields[f"f_irma_{quadrant}"] = forms.BooleanField(required=False)

    def findings(self) -> Findings | None:
        data = self.cleaned_data
        if not data.get("rubric"):
            return None
        findings = Findings(
            microaneurysms=bool(data.get("f_microaneurysms")),
            haemorrhages=frozenset(q for q in QUADRANTS if (data.get(f"f_haem_{q}") or 0) >= 1),
            haemorrhages_severe=frozenset(
                q for q in QUADRANTS if (data.get(f"f_haem_{q}") or 0) >= 2
            ),
            venous_beading=frozenset(q for q in QUADRANTS if data.get(f"f_vb_{q}")),
            irma=frozenset(q for q in QUADRANTS if data.get(f"f_irma_{q}")),
            nv_disc=bool(data.get("f_nv_disc")),
            nv_elsewhere=bool(data.get("f_nv_elsewhere")),
            vitreous_preretinal_haemorrhage=bool(data.get("f_vitreous")),
            hard_exudates=bool(data.get("f_exudates")),
            exudates_near_fovea=bool(data.get("f_exudates_fovea")),
            cotton_wool_spots=bool(data.get("f_cws")),
            laser_scars=bool(data.get("f_laser")),
        )
        # Nothing ticked and a grade above "no DR": a plain grade (the rubric was not used), so a
        # grader can still grade by impression; the record says which it was (rubric_used).
        if findings.is_empty and data.get("grade") not in (None, 0):
            return None
        return findings

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        # A rubric finding the form does not know (a misspelt key, a fifth quadrant) is refused,
        # not dropped: the grade would be saved without what the grader meant to record.
        unknown = sorted(
            key
            for key in self.data
            if key.startswith(RUBRIC_FIELD_PREFIX) and key not in self.fields
        )
        if unknown:
            raise ValidationError(
                f"Unknown rubric finding(s): {', '.join(name[:40] for name in unknown[:5])}; "
                f"quadrants are {', '.join(QUADRANTS)}."
            )
        grade, ungradable = cleaned.get("grade"), cleaned.get("ungradable")
        if grade is None and not ungradable:
            raise ValidationError("Choose a grade (keys 0-4) or mark the image ungradable (U).")
        if grade is not None and ungradable:
            raise ValidationError("Choose either a grade or 'ungradable', not both.")
        if ungradable and cleaned.get("macular_oedema"):
            raise ValidationError(
                "An ungradable image cannot be assessed for macular oedema; clear one of the two."
            )
        findings = self.findings() if not self.errors else None
        if findings is not None:
            if ungradable and not findings.is_empty:
                raise ValidationError(
                    "An ungradable image has no findings; clear the findings or the ungradable mark."
                )
            derived = icdr_grade_derive(findings)
            if (
                grade is not None
                and grade != derived.grade
                and not (cleaned.get("override_reason") or "").strip()
            ):
                self.add_error(
                    "override_reason",
                    f"The findings give grade {derived.grade} ({derived.reason}); give a reason "
                    f"to record grade {grade} instead.",
                )
        return cleaned

    def grade_input(self) -> grade_services.GradeInput:
        data = self.cleaned_data
        return grade_services.GradeInput(
            grade=data["grade"],
            ungradable=bool(data["ungradable"]),
            macular_oedema=bool(data["macular_oedema"]),
            notes=data["notes"] or "",
            findings=self.findings(),
            override_reason=data.get("override_reason") or "",
            correction_reason=data.get("correction_reason") or "",
        )

    @staticmethod
    def initial_from(grade: Grade | None) -> dict[str, Any]:
        """The form's initial values for a saved grade (the inverse of ``findings``)."""
        if grade is None:
            return {}
        initial: dict[str, Any] = {
            "grade": grade.grade_id,
            "ungradable": grade.ungradable,
            "macular_oedema": grade.macular_oedema,
            "notes": grade.notes,
            "override_reason": grade.override_reason,
        }
        if grade.rubric_used:
            findings = Findings.from_dict(grade.findings)
            initial |= {
                "rubric": True,
                "f_microaneurysms": findings.microaneurysms,
                "f_nv_disc": findings.nv_disc,
                "f_nv_elsewhere": findings.nv_elsewhere,
                "f_vitreous": findings.vitreous_preretinal_haemorrhage,
                "f_exudates": findings.hard_exudates,
                "f_exudates_fovea": findings.exudates_near_fovea,
                "f_cws": findings.cotton_wool_spots,
                "f_laser": findings.laser_scars,
            }
            for q in QUADRANTS:
                initial[f"f_haem_{q}"] = (
                    2 if q in findings.haemorrhages_severe else int(q in findings.haemorrhages)
                )
                initial[f"f_vb_{q}"] = q in findings.venous_beading
                initial[f"f_irma_{q}"] = q in findings.irma
        return initial

    def selected_grade(self) -> str:
        """The grade the form shows as chosen (the grade buttons' pressed state), or ""."""
        selected = self["grade"].value()
        return str(selected) if selected not in (None, "") else ""
