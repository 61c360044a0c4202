"""The grading page: one photograph, the grade form with its lesion rubric, the model's view."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_http_methods

from grading import keyboard
from grading.forms.grade import HAEMORRHAGE_LEVELS, GradeForm
from grading.http import AuthenticatedHttpRequest
from grading.models import Grade, GradeLevel, Image
from grading.selectors import certification as certification_selectors
from grading.selectors import corrections as correction_selectors
from grading.selectors import patients as patient_selectors
from grading.selectors import worklist as worklist_selectors
from grading.selectors.assistance import model_view_for
from grading.selectors.grading_scale import scale_get
from grading.services import claims as claim_services
from grading.services import grades as grade_services
from grading.views.access import GRADE_PERMISSION, permission_required
from grading.views.images import viewer_ctx
from grading.views.queue import history_previous, history_visit, leave_ungraded, serve_next
from mlcore.data.rubric import ICDR_VALUES as RUBRIC_ICDR_VALUES
from mlcore.data.rubric import QUADRANT_NAMES, QUADRANTS


def grade_levels() -> list[GradeLevel]:
    """The grading scale, lowest first: the grade form's choices (grading and adjudication)."""
    return list(scale_get().levels)


def saved_text(grade: Grade) -> str:
    """A saved grade as the confirmation messages say it."""
    return "ungradable" if grade.ungradable else str(grade.grade)


# The rubric's single findings: (form field, key, label). Keys avoid the grading keys (0-4, U, M,
# S, V, C, F, Enter, arrows); H, B and I take a quadrant 1-4 next.
RUBRIC_FLAGS = (
    ("f_microaneurysms", "A", "Microaneurysms"),
    ("f_nv_disc", "D", "NVD (new vessels, disc)"),
    ("f_nv_elsewhere", "N", "NVE (new vessels elsewhere)"),
    ("f_vitreous", "P", "Vitreous / pre-retinal haem."),
    ("f_exudates", "E", "Hard exudates"),
    ("f_exudates_fovea", "O", "Exudates ≤ 1 DD of fovea"),
    ("f_cws", "W", "Cotton-wool spots"),
    ("f_laser", "L", "Laser scars"),
)
RUBRIC_QUADRANT_ROWS = (
    ("haem", "H", "Haemorrhages"),
    ("vb", "B", "Venous beading"),
    ("irma", "I", "IRMA"),
)


def _rubric_available() -> bool:
    """The rule grades on ICDR 0-4: on another scale (FUNDUS_GRADE_SCALE) the rubric is off."""
    values = set(scale_get().classes)
    return worklist_selectors.workbench_settings_get().rubric_enabled and values == set(
        RUBRIC_ICDR_VALUES
    )


def _bound_int(form: GradeForm, name: str) -> int:
    try:
        return int(form[name].value() or 0)
    except (TypeError, ValueError):
        return 0


def _rubric_ctx(form: GradeForm) -> dict[str, Any]:
    """The rubric's inputs with the values the form holds (typed, saved or initial)."""
    rows = []
    for row, key, label in RUBRIC_QUADRANT_ROWS:
        cells = []
        for q in QUADRANTS:
            name = f"f_{row}_{q}"
            value = _bound_int(form, name) if row == "haem" else bool(form[name].value())
            cells.append({"name": name, "quadrant": q, "value": value})
        rows.append({"row": row, "key": key, "label": label, "cells": cells})
    return {
        "quadrants": [(q, QUADRANT_NAMES[q]) for q in QUADRANTS],
        "quadrant_rows": rows,
        "flags": [
            {"name": name, "key": key, "label": label, "checked": bool(form[name].value())}
            for name, key, label in RUBRIC_FLAGS
        ],
        "haemorrhage_levels": HAEMORRHAGE_LEVELS,
        "override_reason": form["override_reason"].value() or "",
    }


def _quality_rows(image: Image) -> list[tuple[str, str]]:
    """The photograph's quality measures in words, for the grading page."""
    measures = image.quality_measures or {}
    if not measures:
        return []
    return [
        ("Gradability", f"{image.quality_score:.2f}" if image.quality_score is not None else "–"),
        ("Focus (Laplacian variance)", f"{measures.get('focus', 0):.1f}"),
        (
            "Clipped dark / bright",
            f"{100 * measures.get('dark_fraction', 0):.0f}% / "
            f"{100 * measures.get('bright_fraction', 0):.0f}%",
        ),
        ("Fundus share of frame", f"{100 * measures.get('coverage', 0):.0f}%"),
        ("Resolution", f"{image.width} × {image.height}"),
    ]


def _grade_page(
    request: AuthenticatedHttpRequest,
    image: Image,
    form: GradeForm | None = None,
    status: int = 200,
) -> HttpResponse:
    user = request.user
    levels = grade_levels()
    settings_row = worklist_selectors.workbench_settings_get()
    certification_item = (
        certification_selectors.certification_item_for(image=image)
        if certification_selectors.certification_subject(user=user)
        else None
    )
    others_busy = False
    if certification_item is not None:
        # A certification image: graded once, blind, then compared with the reference.
        my_grade = certification_selectors.certification_grade_for(image=image, grader=user)
        can_grade_now = my_grade is None
    else:
        my_grade = worklist_selectors.grade_current_for(image=image, grader=user)
        can_grade_now = my_grade is not None or image.grading_state == Image.GradingState.PENDING
        if my_grade is None and image.grading_state == Image.GradingState.PENDING:
            others_busy = not claim_services.claim_take(image=image, grader=user)
    if form is None:
        form = GradeForm(initial=GradeForm.initial_from(my_grade), levels=levels)
    model_view = model_view_for(image=image, user=user)
    rubric_on = _rubric_available()
    ctx = {
        "certification_item": certification_item,
        "certification_progress": (
            certification_selectors.certification_result(user=user)
            if certification_item is not None
            else None
        ),
        "rubric_on": rubric_on,
        "rubric": _rubric_ctx(form) if rubric_on else None,
        "quality_keys": _quality_rows(image),
        "image": image,
        "levels": levels,
        "selected_grade": form.selected_grade(),
        "form": form,
        "my_grade": my_grade,
        "my_request": (
            correction_selectors.correction_request_open_for(image=image, grader=user)
            if my_grade is not None and certification_item is None
            else None
        ),
        "correction_requested": my_grade is not None
        and correction_selectors.correction_goes_to_adjudicator(image=image),
        "can_grade_now": can_grade_now,
        "others_busy": others_busy,
        "grades_required": settings_row.grades_required,
        "blind": model_view.state == "hidden",
        "model_view": model_view,
        "context": patient_selectors.patient_context_for(
            image=image,
            hidden_image_ids=certification_selectors.reference_hidden_ids(user=user),
        ),
        "previous_id": history_previous(request, image.pk),
        **viewer_ctx(image, model_view),
        "keyboard_help_html": keyboard.keyboard_help_html(
            page=keyboard.GRADE_PAGE,
            grade_values=[level.value for level in levels],
            extra=keyboard.RUBRIC_KEY_BINDINGS if rubric_on else (),
        ),
    }
    return render(request, "grading/grading/grade.html", ctx, status=status)


@require_http_methods(["GET", "POST"])
@permission_required(GRADE_PERMISSION, raise_exception=True)
def grade_image(request: AuthenticatedHttpRequest, image_id: int) -> HttpResponse:
    image = get_object_or_404(Image.objects.select_related("patient"), pk=image_id)
    if request.method == "GET":
        history_visit(request, image.pk)
        return _grade_page(request, image)

    if "skip" in request.POST.getlist("action"):
        leave_ungraded(request, image)
        return serve_next(request)

    form = GradeForm(request.POST, levels=grade_levels())
    if not form.is_valid():
        return _grade_page(request, image, form=form, status=400)
    try:
        saved = grade_services.grade_save(
            image=image, grader=request.user, choice=form.grade_input()
        )
    except grade_services.GradeRejected as error:
        messages.error(request, str(error))
        return redirect("grade_image", image_id=image.pk)
    # The messages say only what the reader did: nothing about the other grades or the state
    # their correction leads to.
    if saved.request is not None:
        verb = "was already sent" if not saved.changed else "is sent"
        messages.success(request, f"Your correction request {verb} to an adjudicator, who decides.")
    elif not saved.changed:
        messages.info(
            request, f"Your grade was already saved ({saved_text(saved.grade)}); no change."
        )
    else:
        verb = "Correction saved" if saved.corrected else "Grade saved"
        messages.success(request, f"{verb}: {saved_text(saved.grade)}.")
    return redirect("grade_image", image_id=image.pk)


urlpatterns = [path("grade/<int:image_id>/", grade_image, name="grade_image")]
