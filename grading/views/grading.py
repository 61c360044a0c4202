"""Clinician pages: worklist, grading, adjudication, upload, patients, viewer renderings, settings."""

from __future__ import annotations

import datetime as dt
import secrets

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.core.validators import RegexValidator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from grading import keyboard
from grading.models import Grade, GradeLevel, Image, Job, Patient, WorkbenchSettings
from grading.pagination import IdsFirstPaginator
from grading.selectors import certification as certification_selectors
from grading.selectors import patients as patient_selectors
from grading.selectors import worklist as worklist_selectors
from grading.selectors.assistance import (
    model_view_for,
    prediction_cam_file,
    prediction_hidden,
    reader_is_independent,
)
from grading.selectors.model_versions import model_version_active
from grading.services import claims as claim_services
from grading.services import grades as grade_services
from grading.services import renderings
from grading.services.jobs import QueueUnavailable
from grading.services.uploads import (
    ZIP_MAX_MEMBERS,
    UploadVisit,
    upload_files_process,
    upload_is_large,
    upload_stage,
)
from grading.services.workbench import EDITABLE_FIELDS, workbench_settings_update
from grading.views.access import permission_required
from mlcore.data.rubric import ICDR_VALUES as RUBRIC_ICDR_VALUES
from mlcore.data.rubric import QUADRANT_NAMES, QUADRANTS, Findings, icdr_grade_derive

GRADE_PERMISSION = "grading.grade_image"
ADJUDICATE_PERMISSION = "grading.adjudicate_image"
UPLOAD_PERMISSION = "grading.upload_image"
VIEW_IMAGE_PERMISSION = "grading.view_image"
VIEW_PATIENT_PERMISSION = "grading.view_patient"
SETTINGS_PERMISSION = "grading.change_workbenchsettings"

SESSION_ORDER = "grading_queue_order"
SESSION_SEED = "grading_queue_seed"
SESSION_SKIPPED = "grading_skipped"
SESSION_HISTORY = "grading_history"
HISTORY_LENGTH = 50
SKIPPED_LENGTH = 500
WORKLIST_PAGE_SIZE = 25
PATIENTS_PAGE_SIZE = 25


# ---------------------------------------------------------------------------------------------
# Session helpers: the user's queue order, the images they skipped, where they have been.


def _queue_orders_allowed(settings_row: WorkbenchSettings) -> tuple[str, ...]:
    """Ordering by the model's uncertainty tells a blind reader how sure the model is; in blind
    mode it is offered only when the admin allowed it on the settings page."""
    if settings_row.blind_first_grader and not settings_row.allow_uncertain_order_when_blind:
        return tuple(
            order
            for order in worklist_selectors.QUEUE_ORDERS
            if order != WorkbenchSettings.QueueOrder.UNCERTAIN
        )
    return tuple(worklist_selectors.QUEUE_ORDERS)


def _queue_order(request: HttpRequest) -> tuple[str, bool]:
    """The queue order in force and whether it is the user's own choice (else the admin's)."""
    settings_row = worklist_selectors.workbench_settings_get()
    allowed = _queue_orders_allowed(settings_row)
    chosen = request.session.get(SESSION_ORDER)
    if chosen in allowed:
        return chosen, True
    default = settings_row.queue_order
    return (default if default in allowed else WorkbenchSettings.QueueOrder.OLDEST), False


def _queue_seed(request: HttpRequest) -> str:
    seed = request.session.get(SESSION_SEED)
    if not seed:
        seed = request.session[SESSION_SEED] = secrets.token_hex(8)
    return seed


def _skipped(request: HttpRequest) -> list[int]:
    return list(request.session.get(SESSION_SKIPPED, []))


def _skip(request: HttpRequest, image_id: int) -> None:
    skipped = [pk for pk in _skipped(request) if pk != image_id] + [image_id]
    request.session[SESSION_SKIPPED] = skipped[-SKIPPED_LENGTH:]


def _history_visit(request: HttpRequest, image_id: int) -> None:
    history = list(request.session.get(SESSION_HISTORY, []))
    if image_id in history:
        return  # going back and forth keeps the original order
    request.session[SESSION_HISTORY] = (history + [image_id])[-HISTORY_LENGTH:]


def _history_previous(request: HttpRequest, image_id: int) -> int | None:
    history = list(request.session.get(SESSION_HISTORY, []))
    if image_id in history:
        index = history.index(image_id)
        return history[index - 1] if index > 0 else None
    return history[-1] if history else None


def _leave_ungraded(request: HttpRequest, image: Image) -> None:
    """Leaving an image without grading it: free its claim for others and count it as skipped."""
    if worklist_selectors.grade_current_for(image=image, grader=request.user) is None:
        claim_services.claim_release(image=image, grader=request.user)
        _skip(request, image.pk)


def _certification_next(request: HttpRequest) -> int | None:
    """The certification image to serve now, if any: in a dedicated session every one comes
    first; mixed into the queue, one certification image follows each ordinary grade (or comes
    anyway when the ordinary queue is empty, so a fresh install always has work)."""
    user = request.user
    skipped = set(_skipped(request))
    pending = [
        image_id
        for image_id in certification_selectors.certification_pending_ids(
            grader=user, seed=_queue_seed(request)
        )
        if image_id not in skipped
    ]
    if not pending:
        return None
    settings_row = worklist_selectors.workbench_settings_get()
    if settings_row.certification_mode == WorkbenchSettings.CertificationMode.SESSION:
        return pending[0]
    certification_done = Grade.objects.filter(grader=user, kind=Grade.Kind.CERTIFICATION).count()
    ordinary_done = Grade.objects.filter(grader=user, kind=Grade.Kind.GRADER).count()
    if certification_done <= ordinary_done:
        return pending[0]
    ordinary_left = (
        worklist_selectors.images_needing_grade(grader=user).exclude(pk__in=skipped).exists()
    )
    return None if ordinary_left else pending[0]


def _serve_next(request: HttpRequest) -> HttpResponse:
    certification_id = _certification_next(request)
    if certification_id is not None:
        _history_visit(request, certification_id)
        return redirect("grade_image", image_id=certification_id)
    order, _ = _queue_order(request)
    image = claim_services.claim_next(
        grader=request.user,
        order=order,
        seed=_queue_seed(request),
        exclude_ids=_skipped(request),
    )
    if image is None:
        if _skipped(request):
            messages.info(
                request,
                "Only images you skipped are left. Clear the skipped list on the worklist to "
                "see them again.",
            )
        else:
            messages.info(request, "Nothing left to grade in your queue. Thank you!")
        return redirect("worklist")
    _history_visit(request, image.pk)
    return redirect("grade_image", image_id=image.pk)


def _page_number(request: HttpRequest) -> str:
    return request.GET.get("page") or "1"


# ---------------------------------------------------------------------------------------------
# Worklist


@require_GET
@permission_required(GRADE_PERMISSION, raise_exception=True)
def worklist(request: HttpRequest) -> HttpResponse:
    settings_row = worklist_selectors.workbench_settings_get()
    allowed_orders = _queue_orders_allowed(settings_row)
    if "order" in request.GET:
        choice = request.GET["order"]
        if choice == "default":
            request.session.pop(SESSION_ORDER, None)
        elif choice in allowed_orders:
            request.session[SESSION_ORDER] = choice
        elif choice in worklist_selectors.QUEUE_ORDERS:
            messages.error(
                request,
                "Ordering by the model's uncertainty would reveal the model's confidence during "
                "blind reading; an admin can allow it in the grading settings.",
            )
        else:
            messages.error(request, f"Unknown queue order {choice[:40]!r}.")
        return redirect("worklist")
    if request.GET.get("skipped") == "clear":
        request.session.pop(SESSION_SKIPPED, None)
        messages.info(request, "Skipped images are back in your queue.")
        return redirect("worklist")

    order, own_choice = _queue_order(request)
    skipped = _skipped(request)
    queue = worklist_selectors.QueueIds(
        worklist_selectors.worklist_sources(
            grader=request.user, order=order, seed=_queue_seed(request)
        )
    )
    page = Paginator(queue, WORKLIST_PAGE_SIZE).get_page(_page_number(request))
    held = set(worklist_selectors.claim_held(grader=request.user))
    rows = [
        {
            "image": image,
            "position": page.start_index() + index,
            "held": image.pk in held,
            "skipped": image.pk in skipped,
        }
        for index, image in enumerate(
            worklist_selectors.images_for_list(image_ids=list(page.object_list))
        )
    ]
    ctx = {
        "rows": rows,
        "page": page,
        "order": order,
        "order_label": WorkbenchSettings.QueueOrder(order).label,
        "own_choice": own_choice,
        "default_order_label": WorkbenchSettings.QueueOrder(
            settings_row.queue_order
            if settings_row.queue_order in allowed_orders
            else WorkbenchSettings.QueueOrder.OLDEST
        ).label,
        "orders": [
            (value, label)
            for value, label in WorkbenchSettings.QueueOrder.choices
            if value in allowed_orders
        ],
        "counts": worklist_selectors.worklist_counts(grader=request.user, mine=queue.count()),
        "mine_capped": queue.capped,
        "skipped_count": worklist_selectors.images_needing_grade(grader=request.user)
        .filter(pk__in=skipped)
        .count()
        if skipped
        else 0,
        "settings_row": settings_row,
        "can_change_settings": request.user.has_perm(SETTINGS_PERMISSION),
        "certification_left": bool(
            certification_selectors.certification_pending_ids(grader=request.user)
        ),
        "certification": (
            certification_selectors.certification_result(user=request.user)
            if certification_selectors.certification_subject(user=request.user)
            and certification_selectors.certification_set_size()
            else None
        ),
        "quality_check_count": Image.objects.filter(
            grading_state=Image.GradingState.PENDING, quality_review=Image.QualityReview.CHECK
        ).count(),
    }
    return render(request, "grading/grading/worklist.html", ctx)


class WorklistNextForm(forms.Form):
    """``from``: the image the grader leaves; anything that is not an image id is ignored."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # "from" is a Python keyword, so the field is added by name.
        self.fields["from"] = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1)


@require_POST
@permission_required(GRADE_PERMISSION, raise_exception=True)
def worklist_next(request: HttpRequest) -> HttpResponse:
    """Claim the next image and go to it. Leaving an image without grading it counts as a skip."""
    form = WorklistNextForm(request.POST)
    if form.is_valid() and form.cleaned_data["from"] is not None:
        image = Image.objects.filter(pk=form.cleaned_data["from"]).first()
        if image is not None:
            _leave_ungraded(request, image)
    return _serve_next(request)


# ---------------------------------------------------------------------------------------------
# Grading


HAEMORRHAGE_LEVELS = [(0, "–"), (1, "+"), (2, "20+")]  # none, present, 20 or more


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

    def __init__(self, *args, levels: list[GradeLevel], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["grade"].choices = [("", "—")] + [(level.value, str(level)) for level in levels]
        for quadrant in QUADRANTS:
            self.fields[f"f_haem_{quadrant}"] = forms.TypedChoiceField(
                coerce=int, choices=HAEMORRHAGE_LEVELS, required=False, empty_value=0
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

    def clean(self) -> dict:
        cleaned = super().clean()
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
        )


def _grade_levels() -> list[GradeLevel]:
    return list(GradeLevel.objects.order_by("value"))


def _selected_grade(form: GradeForm) -> str:
    """The grade the form shows as chosen (the grade buttons' pressed state), or ""."""
    selected = form["grade"].value()
    return str(selected) if selected not in (None, "") else ""


def _saved_text(grade: Grade) -> str:
    return "ungradable" if grade.ungradable else str(grade.grade)


def _grade_initial(grade: Grade | None) -> dict:
    if grade is None:
        return {}
    initial = {
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
    values = set(GradeLevel.objects.values_list("value", flat=True))
    return worklist_selectors.workbench_settings_get().rubric_enabled and values == set(
        RUBRIC_ICDR_VALUES
    )


def _bound_int(form: GradeForm, name: str) -> int:
    try:
        return int(form[name].value() or 0)
    except (TypeError, ValueError):
        return 0


def _rubric_ctx(form: GradeForm) -> dict:
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


def _viewer_ctx(image: Image, model_view) -> dict:
    modes = [("original", "Original", reverse("image_file", args=[image.pk]))] + [
        (mode, label, reverse("image_view", args=[image.pk, mode]))
        for mode, label in (
            ("cropped", "Cropped"),
            ("red_free", "Red-free"),
            ("ben_graham", "Ben Graham"),
        )
    ]
    cam_url = (
        reverse("image_cam", args=[image.pk])
        if model_view.state == "ready" and model_view.cam_available
        else ""
    )
    return {"view_modes": modes, "cam_url": cam_url}


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
    request: HttpRequest, image: Image, form: GradeForm | None = None, status: int = 200
) -> HttpResponse:
    user = request.user
    levels = _grade_levels()
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
        form = GradeForm(initial=_grade_initial(my_grade), levels=levels)
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
        "selected_grade": _selected_grade(form),
        "form": form,
        "my_grade": my_grade,
        "can_grade_now": can_grade_now,
        "others_busy": others_busy,
        "grades_required": settings_row.grades_required,
        "blind": model_view.state == "hidden",
        "model_view": model_view,
        "context": patient_selectors.patient_context_for(
            image=image,
            hidden_image_ids=certification_selectors.reference_hidden_ids(user=user),
        ),
        "previous_id": _history_previous(request, image.pk),
        **_viewer_ctx(image, model_view),
        **keyboard.keyboard_ctx(
            page=keyboard.GRADE_PAGE,
            grade_values=[level.value for level in levels],
            extra=keyboard.RUBRIC_KEY_BINDINGS if rubric_on else (),
        ),
    }
    return render(request, "grading/grading/grade.html", ctx, status=status)


@require_http_methods(["GET", "POST"])
@permission_required(GRADE_PERMISSION, raise_exception=True)
def grade_image(request: HttpRequest, image_id: int) -> HttpResponse:
    image = get_object_or_404(Image.objects.select_related("patient"), pk=image_id)
    if request.method == "GET":
        _history_visit(request, image.pk)
        return _grade_page(request, image)

    if "skip" in request.POST.getlist("action"):
        _leave_ungraded(request, image)
        return _serve_next(request)

    form = GradeForm(request.POST, levels=_grade_levels())
    if not form.is_valid():
        return _grade_page(request, image, form=form, status=400)
    before = worklist_selectors.grade_current_for(image=image, grader=request.user)
    try:
        grade = grade_services.grade_submit(
            image=image, grader=request.user, choice=form.grade_input()
        )
    except grade_services.GradeRejected as error:
        messages.error(request, str(error))
        return redirect("grade_image", image_id=image.pk)
    if before is not None and grade.pk == before.pk:
        messages.info(request, f"Your grade was already saved ({_saved_text(grade)}); no change.")
        return redirect("grade_image", image_id=image.pk)
    verb = "Correction saved" if before is not None else "Grade saved"
    messages.success(request, f"{verb}: {_saved_text(grade)}.")
    return redirect("grade_image", image_id=image.pk)


# ---------------------------------------------------------------------------------------------
# Adjudication


@require_GET
@permission_required(ADJUDICATE_PERMISSION, raise_exception=True)
def adjudication_queue(request: HttpRequest) -> HttpResponse:
    pending = list(worklist_selectors.adjudication_pending()[:200])
    current = {}
    for grade in Grade.objects.filter(
        image__in=pending, kind=Grade.Kind.GRADER, superseded_by__isnull=True
    ).select_related("grade", "grader"):
        current.setdefault(grade.image_id, []).append(grade)
    flagged = worklist_selectors.model_disagreements()
    # The flags are a join of every confirmed image with the active version's predictions: a
    # page's ids come from that join on narrow index-only rows, then only 50 rows are read whole.
    flagged_paginator = IdsFirstPaginator(flagged, 50)
    flagged_paginator.count = worklist_selectors.model_disagreements_count()
    flagged_page = flagged_paginator.get_page(_page_number(request))
    ctx = {
        "pending": [(image, current.get(image.pk, [])) for image in pending],
        "pending_total": worklist_selectors.adjudication_pending().count(),
        "flagged_page": flagged_page,
        "active_model": model_version_active(),
    }
    return render(request, "grading/grading/adjudication_queue.html", ctx)


@require_http_methods(["GET", "POST"])
@permission_required(ADJUDICATE_PERMISSION, raise_exception=True)
def adjudicate(request: HttpRequest, image_id: int) -> HttpResponse:
    image = get_object_or_404(
        Image.objects.select_related("patient", "confirmed_grade"), pk=image_id
    )
    if reader_is_independent(image=image, user=request.user):
        # This page shows the model and every grade: whoever may still grade the image
        # independently (an admin too) reads it blind on the grading page instead.
        messages.info(
            request,
            "This image is still waiting for its independent grades, and you may grade it: "
            "grade it here first; the other grades and the model are hidden until you save.",
        )
        return redirect("grade_image", image_id=image.pk)
    levels = _grade_levels()
    form = GradeForm(request.POST or None, levels=levels)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                grade = grade_services.grade_adjudicate(
                    image=image, reviewer=request.user, choice=form.grade_input()
                )
            except grade_services.GradeRejected as error:
                messages.error(request, str(error))
                return redirect("adjudicate", image_id=image.pk)
            messages.success(
                request, f"Image #{image.pk} confirmed by adjudication: {_saved_text(grade)}."
            )
            following = worklist_selectors.adjudication_pending().exclude(pk=image.pk).first()
            if following is not None:
                return redirect("adjudicate", image_id=following.pk)
            return redirect("adjudication_queue")
        status = 400
    grades = list(
        Grade.objects.filter(image=image)
        .select_related("grade", "grader", "supersedes")
        .order_by("created_at", "id")
    )
    superseded_ids = {grade.supersedes_id for grade in grades if grade.supersedes_id}
    model_view = model_view_for(image=image, user=request.user, reveal=True)
    if not form.is_bound:
        current = [g for g in grades if g.kind == Grade.Kind.GRADER and g.pk not in superseded_ids]
        if current and len({(g.grade_id, g.ungradable) for g in current}) == 1:
            form = GradeForm(initial=_grade_initial(current[0]) | {"notes": ""}, levels=levels)
    ctx = {
        "image": image,
        "levels": levels,
        "form": form,
        "selected_grade": _selected_grade(form),
        "grades": [(grade, grade.pk in superseded_ids) for grade in grades],
        "model_view": model_view,
        "context": patient_selectors.patient_context_for(image=image),
        "i_graded_it": any(
            g.grader_id == request.user.pk and g.kind == Grade.Kind.GRADER for g in grades
        ),
        "self_adjudication_allowed": worklist_selectors.workbench_settings_get().allow_self_adjudication,
        **_viewer_ctx(image, model_view),
        **keyboard.keyboard_ctx(
            page=keyboard.ADJUDICATE_PAGE, grade_values=[level.value for level in levels]
        ),
    }
    return render(request, "grading/grading/adjudicate.html", ctx, status=status)


# ---------------------------------------------------------------------------------------------
# Upload


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
        return value


def _upload_limits() -> dict[str, int]:
    return {
        "min_side": settings.FUNDUS_MIN_IMAGE_SIDE,
        "inline_max_files": settings.FUNDUS_UPLOAD_INLINE_MAX_FILES,
    }


def _upload_visit(form: UploadForm) -> UploadVisit:
    return UploadVisit(
        patient_pseudonym=form.cleaned_data["patient_id"],
        eye=form.cleaned_data["eye"],
        acquired_on=form.cleaned_data["acquired_on"],
    )


@require_GET
@permission_required(UPLOAD_PERMISSION, raise_exception=True)
def upload_job(request: HttpRequest, job_id: int) -> HttpResponse:
    """Progress and result of a large upload's background import (polled by htmx)."""
    job = get_object_or_404(Job, pk=job_id, kind=Job.Kind.IMAGES_IMPORT)
    if job.created_by_id != request.user.pk and not request.user.has_perm("grading.manage_jobs"):
        raise Http404("No such upload.")
    if request.htmx:
        return render(request, "grading/grading/_upload_job.html", {"job": job})
    return render(request, "grading/grading/upload_job.html", {"job": job})


@require_http_methods(["GET", "POST"])
@permission_required(UPLOAD_PERMISSION, raise_exception=True)
def upload(request: HttpRequest) -> HttpResponse:
    form = UploadForm(request.POST or None)
    files = request.FILES.getlist("files") if request.method == "POST" else []
    report = None
    status = 200
    if request.method == "POST":
        if not files:
            form.add_error(None, "Choose at least one photograph or a .zip of photographs.")
        if form.is_valid() and upload_is_large(files):
            try:
                job = upload_stage(files=files, visit=_upload_visit(form), uploaded_by=request.user)
            except (QueueUnavailable, OSError) as error:
                form.add_error(
                    None,
                    f"{error} Large uploads are imported in the background; until it is back, "
                    f"upload at most {settings.FUNDUS_UPLOAD_INLINE_MAX_FILES} photographs at "
                    "once. Nothing was stored.",
                )
            else:
                return redirect("upload_job", job_id=job.pk)
        if form.is_valid():
            report = upload_files_process(
                files=files, visit=_upload_visit(form), uploaded_by=request.user
            )
            patient = Patient.objects.filter(pseudonym=form.cleaned_data["patient_id"]).first()
            ctx = {
                "form": UploadForm(initial=form.cleaned_data),
                "report": report,
                "patient": patient,
                "zip_max_members": ZIP_MAX_MEMBERS,
                "active_model": model_version_active(),
                **_upload_limits(),
            }
            return render(request, "grading/grading/upload.html", ctx)
        status = 400
    ctx = {
        "form": form,
        "report": report,
        "zip_max_members": ZIP_MAX_MEMBERS,
        **_upload_limits(),
    }
    return render(request, "grading/grading/upload.html", ctx, status=status)


# ---------------------------------------------------------------------------------------------
# Patients


class PatientSearchForm(forms.Form):
    # Longer input cannot match a pseudonym (64 characters at most); a NUL byte is refused.
    q = forms.CharField(required=False, max_length=64, strip=True)


@require_GET
@permission_required(VIEW_PATIENT_PERMISSION, raise_exception=True)
def patients(request: HttpRequest) -> HttpResponse:
    search = PatientSearchForm(request.GET)
    query = search.cleaned_data["q"].strip() if search.is_valid() else ""
    page = Paginator(patient_selectors.patients_search(query=query), PATIENTS_PAGE_SIZE).get_page(
        _page_number(request)
    )
    statuses = patient_selectors.patients_referable_status(
        patient_ids=[patient.pk for patient in page.object_list],
        hidden_image_ids=certification_selectors.reference_hidden_ids(user=request.user),
    )
    patients_counted = patient_selectors.patients_with_counts(patients=page.object_list)
    ctx = {
        "query": query,
        "page": page,
        "rows": [(patient, statuses[patient.pk]) for patient in patients_counted],
    }
    return render(request, "grading/grading/patients.html", ctx)


@require_GET
@permission_required(VIEW_PATIENT_PERMISSION, raise_exception=True)
def patient_detail(request: HttpRequest, patient_id: int) -> HttpResponse:
    patient = get_object_or_404(Patient, pk=patient_id)
    hidden = certification_selectors.reference_hidden_ids(user=request.user)
    ctx = {
        "patient": patient,
        "timelines": patient_selectors.patient_eyes_timeline(
            patient=patient, hidden_image_ids=hidden
        ),
        "status": patient_selectors.patient_referable_status(
            patient=patient, hidden_image_ids=hidden
        ),
        "referable_from": GradeLevel.objects.filter(is_referable=True).order_by("value").first(),
        "can_grade": request.user.has_perm(GRADE_PERMISSION),
    }
    return render(request, "grading/grading/patient_detail.html", ctx)


# ---------------------------------------------------------------------------------------------
# Viewer renderings and the CAM overlay (clinical data: login and permission, private caching)


def _png_response(path) -> FileResponse:
    response = FileResponse(open(path, "rb"), content_type="image/png")  # noqa: SIM115
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_GET
@permission_required(VIEW_IMAGE_PERMISSION, raise_exception=True)
def image_view(request: HttpRequest, image_id: int, mode: str) -> HttpResponse:
    image = get_object_or_404(Image, pk=image_id)
    if mode not in renderings.VIEW_MODES:
        raise Http404(f"Unknown view {mode!r}.")
    try:
        rendered = renderings.image_view_render(image=image, mode=mode)
    except renderings.RenderingFailed as error:
        raise Http404(f"This view of the photograph is not available: {error}.") from None
    return _png_response(rendered)


@require_GET
@permission_required(VIEW_IMAGE_PERMISSION, raise_exception=True)
def image_cam(request: HttpRequest, image_id: int) -> HttpResponse:
    image = get_object_or_404(Image, pk=image_id)
    # The map reveals the model's opinion: a blinded first grader gets it only after grading.
    if prediction_hidden(image=image, user=request.user):
        return HttpResponse(
            "The model's view is hidden until you save your grade.",
            status=403,
            content_type="text/plain",
        )
    model_view = model_view_for(image=image, user=request.user, reveal=True)
    cam = prediction_cam_file(prediction=model_view.prediction) if model_view.prediction else None
    if cam is None:
        raise Http404("No class activation map is available for this image.")
    return _png_response(cam)


# ---------------------------------------------------------------------------------------------
# Workbench settings (admin)


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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, text in self.setting_help.items():
            self.fields[name].help_text = text

    def clean(self) -> dict:
        cleaned = super().clean()
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


@require_http_methods(["GET", "POST"])
@permission_required(SETTINGS_PERMISSION, raise_exception=True)
def workbench_settings(request: HttpRequest) -> HttpResponse:
    current = worklist_selectors.workbench_settings_get()
    form = WorkbenchSettingsForm(request.POST or None, instance=current)
    if request.method == "POST":
        if form.is_valid():
            values = {name: form.cleaned_data[name] for name in WorkbenchSettingsForm.Meta.fields}
            _, settled = workbench_settings_update(**values)
            note = (
                f" {settled} pending image(s) now have enough grades and were settled."
                if settled
                else ""
            )
            messages.success(request, f"Grading settings saved.{note}")
            return redirect("workbench_settings")
        return render(
            request, "grading/grading/workbench_settings.html", {"form": form}, status=400
        )
    return render(request, "grading/grading/workbench_settings.html", {"form": form})


urlpatterns = [
    path("worklist/", worklist, name="worklist"),
    path("worklist/next/", worklist_next, name="worklist_next"),
    path("grade/<int:image_id>/", grade_image, name="grade_image"),
    path("adjudication/", adjudication_queue, name="adjudication_queue"),
    path("adjudicate/<int:image_id>/", adjudicate, name="adjudicate"),
    path("upload/", upload, name="upload"),
    path("upload/jobs/<int:job_id>/", upload_job, name="upload_job"),
    path("patients/", patients, name="patients"),
    path("patients/<int:patient_id>/", patient_detail, name="patient_detail"),
    path("images/<int:image_id>/view/<str:mode>.png", image_view, name="image_view"),
    path("images/<int:image_id>/cam.png", image_cam, name="image_cam"),
    path("settings/grading/", workbench_settings, name="workbench_settings"),
]
