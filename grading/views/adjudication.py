"""Adjudication: the queue of images whose grades disagree, and the page that settles one."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods

from grading import keyboard
from grading.forms.grade import GradeForm
from grading.http import AuthenticatedHttpRequest
from grading.models import Grade, Image
from grading.pagination import IdsFirstPaginator, page_number
from grading.selectors import patients as patient_selectors
from grading.selectors import worklist as worklist_selectors
from grading.selectors.assistance import model_view_for, reader_is_independent
from grading.selectors.corrections import correction_requests_open
from grading.selectors.model_versions import model_version_active
from grading.services import grades as grade_services
from grading.views.access import ADJUDICATE_PERMISSION, permission_required
from grading.views.grade import grade_levels, saved_text
from grading.views.images import viewer_ctx


@require_GET
@permission_required(ADJUDICATE_PERMISSION, raise_exception=True)
def adjudication_queue(request: AuthenticatedHttpRequest) -> HttpResponse:
    pending = list(worklist_selectors.adjudication_pending()[:200])
    current: dict[int, list[Grade]] = {}
    for grade in Grade.objects.filter(
        image__in=pending, kind=Grade.Kind.GRADER, superseded_by__isnull=True
    ).select_related("grade", "grader"):
        current.setdefault(grade.image_id, []).append(grade)
    flagged = worklist_selectors.model_disagreements()
    # The flags are a join of every confirmed image with the active version's predictions: a
    # page's ids come from that join on narrow index-only rows, then only 50 rows are read whole.
    flagged_paginator = IdsFirstPaginator(flagged, 50)
    flagged_paginator.count = worklist_selectors.model_disagreements_count()
    flagged_page = flagged_paginator.get_page(page_number(request))
    ctx = {
        "pending": [(image, current.get(image.pk, [])) for image in pending],
        "pending_total": worklist_selectors.adjudication_pending().count(),
        "flagged_page": flagged_page,
        "active_model": model_version_active(),
    }
    return render(request, "grading/grading/adjudication_queue.html", ctx)


@require_http_methods(["GET", "POST"])
@permission_required(ADJUDICATE_PERMISSION, raise_exception=True)
def adjudicate(request: AuthenticatedHttpRequest, image_id: int) -> HttpResponse:
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
    levels = grade_levels()
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
                request, f"Image #{image.pk} confirmed by adjudication: {saved_text(grade)}."
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
            form = GradeForm(
                initial=GradeForm.initial_from(current[0]) | {"notes": ""}, levels=levels
            )
    ctx = {
        "image": image,
        "levels": levels,
        "form": form,
        "selected_grade": form.selected_grade(),
        "grades": [(grade, grade.pk in superseded_ids) for grade in grades],
        "correction_requests": list(correction_requests_open(image=image)),
        "model_view": model_view,
        "context": patient_selectors.patient_context_for(image=image),
        "i_graded_it": any(
            g.grader_id == request.user.pk and g.kind == Grade.Kind.GRADER for g in grades
        ),
        "self_adjudication_allowed": worklist_selectors.workbench_settings_get().allow_self_adjudication,
        **viewer_ctx(image, model_view),
        "keyboard_help_html": keyboard.keyboard_help_html(
            page=keyboard.ADJUDICATE_PAGE, grade_values=[level.value for level in levels]
        ),
    }
    return render(request, "grading/grading/adjudicate.html", ctx, status=status)


urlpatterns = [
    path("adjudication/", adjudication_queue, name="adjudication_queue"),
    path("adjudicate/<int:image_id>/", adjudicate, name="adjudicate"),
]
