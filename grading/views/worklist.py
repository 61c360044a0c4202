"""The clinician's worklist and "Next image"."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from grading.forms.worklist import WorklistNextForm
from grading.http import AuthenticatedHttpRequest
from grading.models import Image, WorkbenchSettings
from grading.pagination import page_number, sliced_rows_page
from grading.selectors import certification as certification_selectors
from grading.selectors import worklist as worklist_selectors
from grading.views.access import GRADE_PERMISSION, SETTINGS_PERMISSION, permission_required
from grading.views.queue import (
    leave_ungraded,
    queue_order,
    queue_order_choose,
    queue_orders_allowed,
    queue_seed,
    serve_next,
    skipped_clear,
    skipped_ids,
)

WORKLIST_PAGE_SIZE = 25


@require_GET
@permission_required(GRADE_PERMISSION, raise_exception=True)
def worklist(request: AuthenticatedHttpRequest) -> HttpResponse:
    settings_row = worklist_selectors.workbench_settings_get()
    allowed_orders = queue_orders_allowed(settings_row)
    if "order" in request.GET:
        queue_order_choose(request, request.GET["order"], allowed=allowed_orders)
        return redirect("worklist")
    if request.GET.get("skipped") == "clear":
        skipped_clear(request)
        messages.info(request, "Skipped images are back in your queue.")
        return redirect("worklist")

    order, own_choice = queue_order(request)
    skipped = skipped_ids(request)
    queue = worklist_selectors.QueueIds(
        worklist_selectors.worklist_sources(
            grader=request.user, order=order, seed=queue_seed(request)
        )
    )
    page = sliced_rows_page(queue, WORKLIST_PAGE_SIZE, page_number(request))
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


@require_POST
@permission_required(GRADE_PERMISSION, raise_exception=True)
def worklist_next(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Claim the next image and go to it. Leaving an image without grading it counts as a skip."""
    form = WorklistNextForm(request.POST)
    if form.is_valid() and form.cleaned_data["from"] is not None:
        image = Image.objects.filter(pk=form.cleaned_data["from"]).first()
        if image is not None:
            leave_ungraded(request, image)
    return serve_next(request)


urlpatterns = [
    path("worklist/", worklist, name="worklist"),
    path("worklist/next/", worklist_next, name="worklist_next"),
]
