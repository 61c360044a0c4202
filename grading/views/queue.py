"""The grader's queue as the session keeps it: the order they chose, the images they skipped,
where they have been, and which image to serve next (shared by the worklist and the grading page)."""

from __future__ import annotations

import secrets

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect

from grading.http import AuthenticatedHttpRequest
from grading.models import Grade, Image, WorkbenchSettings
from grading.selectors import certification as certification_selectors
from grading.selectors import worklist as worklist_selectors
from grading.services import claims as claim_services

SESSION_ORDER = "grading_queue_order"
SESSION_SEED = "grading_queue_seed"
SESSION_SKIPPED = "grading_skipped"
SESSION_HISTORY = "grading_history"
HISTORY_LENGTH = 50
SKIPPED_LENGTH = 500


def queue_orders_allowed(settings_row: WorkbenchSettings) -> tuple[str, ...]:
    """Ordering by the model's uncertainty tells a blind reader how sure the model is; in blind
    mode it is offered only when the admin allowed it on the settings page."""
    if settings_row.blind_first_grader and not settings_row.allow_uncertain_order_when_blind:
        return tuple(
            order
            for order in worklist_selectors.QUEUE_ORDERS
            if order != WorkbenchSettings.QueueOrder.UNCERTAIN
        )
    return tuple(worklist_selectors.QUEUE_ORDERS)


def queue_order(request: AuthenticatedHttpRequest) -> tuple[str, bool]:
    """The queue order in force and whether it is the user's own choice (else the admin's)."""
    settings_row = worklist_selectors.workbench_settings_get()
    allowed = queue_orders_allowed(settings_row)
    chosen = request.session.get(SESSION_ORDER)
    if chosen in allowed:
        return chosen, True
    default = settings_row.queue_order
    return (default if default in allowed else WorkbenchSettings.QueueOrder.OLDEST), False


def queue_order_choose(
    request: AuthenticatedHttpRequest, choice: str, *, allowed: tuple[str, ...]
) -> None:
    """Keep the user's own queue order (``default``: the admin's again), or say why not."""
    if choice == "default":
        request.session.pop(SESSION_ORDER, None)
    elif choice in allowed:
        request.session[SESSION_ORDER] = choice
    elif choice in worklist_selectors.QUEUE_ORDERS:
        messages.error(
            request,
            "Ordering by the model's uncertainty would reveal the model's confidence during "
            "blind reading; an admin can allow it in the grading settings.",
        )
    else:
        messages.error(request, f"Unknown queue order {choice[:40]!r}.")


def queue_seed(request: AuthenticatedHttpRequest) -> str:
    seed = request.session.get(SESSION_SEED)
    if not seed:
        seed = request.session[SESSION_SEED] = secrets.token_hex(8)
    return seed


def skipped_clear(request: AuthenticatedHttpRequest) -> None:
    request.session.pop(SESSION_SKIPPED, None)


def skipped_ids(request: AuthenticatedHttpRequest) -> list[int]:
    return list(request.session.get(SESSION_SKIPPED, []))


def _skip(request: AuthenticatedHttpRequest, image_id: int) -> None:
    skipped = [pk for pk in skipped_ids(request) if pk != image_id] + [image_id]
    request.session[SESSION_SKIPPED] = skipped[-SKIPPED_LENGTH:]


def history_visit(request: AuthenticatedHttpRequest, image_id: int) -> None:
    history = list(request.session.get(SESSION_HISTORY, []))
    if image_id in history:
        return  # going back and forth keeps the original order
    request.session[SESSION_HISTORY] = (history + [image_id])[-HISTORY_LENGTH:]


def history_previous(request: AuthenticatedHttpRequest, image_id: int) -> int | None:
    history = list(request.session.get(SESSION_HISTORY, []))
    if image_id in history:
        index = history.index(image_id)
        return history[index - 1] if index > 0 else None
    return history[-1] if history else None


def leave_ungraded(request: AuthenticatedHttpRequest, image: Image) -> None:
    """Leaving an image without grading it: free its claim for others and count it as skipped."""
    if worklist_selectors.grade_current_for(image=image, grader=request.user) is None:
        claim_services.claim_release(image=image, grader=request.user)
        _skip(request, image.pk)


def _certification_next(request: AuthenticatedHttpRequest) -> int | None:
    """The certification image to serve now, if any: in a dedicated session every one comes
    first; mixed into the queue, one certification image follows each ordinary grade (or comes
    anyway when the ordinary queue is empty, so a fresh install always has work)."""
    user = request.user
    skipped = set(skipped_ids(request))
    pending = [
        image_id
        for image_id in certification_selectors.certification_pending_ids(
            grader=user, seed=queue_seed(request)
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


def serve_next(request: AuthenticatedHttpRequest) -> HttpResponse:
    certification_id = _certification_next(request)
    if certification_id is not None:
        history_visit(request, certification_id)
        return redirect("grade_image", image_id=certification_id)
    order, _ = queue_order(request)
    image = claim_services.claim_next(
        grader=request.user,
        order=order,
        seed=queue_seed(request),
        exclude_ids=skipped_ids(request),
    )
    if image is None:
        if skipped_ids(request):
            messages.info(
                request,
                "Only images you skipped are left. Clear the skipped list on the worklist to "
                "see them again.",
            )
        else:
            messages.info(request, "Nothing left to grade in your queue. Thank you!")
        return redirect("worklist")
    history_visit(request, image.pk)
    return redirect("grade_image", image_id=image.pk)
