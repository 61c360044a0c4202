"""Grading protocol pages: certification on the gold set, and the photo-quality check queue."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from grading.forms.protocol import CertificationBuildForm, ProtocolSettingsForm, QualityDecisionForm
from grading.http import AuthenticatedHttpRequest
from grading.models import CertificationItem, GradeLevel, Image
from grading.selectors import certification as certification_selectors
from grading.selectors.visibility import images_read_independently
from grading.selectors.worklist import workbench_settings_get
from grading.services import certification as certification_services
from grading.services import quality as quality_services
from grading.services.workbench import workbench_settings_update
from grading.views.access import GRADE_PERMISSION, SETTINGS_PERMISSION, permission_required

MANAGE_PERMISSION = "grading.manage_certification"
QUALITY_PAGE_SIZE = 100


@require_GET
def certification(request: AuthenticatedHttpRequest) -> HttpResponse:
    user = request.user
    manager = user.has_perm(MANAGE_PERMISSION) or user.has_perm("grading.review_agreement")
    if not (manager or certification_selectors.certification_subject(user=user)):
        raise PermissionDenied("Certification is for clinicians and the admins who manage it.")
    composition = {level.value: 0 for level in GradeLevel.objects.order_by("value")} | dict(
        CertificationItem.objects.order_by()
        .values_list("reference_grade_id")
        .annotate(n=Count("id"))
        .values_list("reference_grade_id", "n")
    )
    ctx = {
        "manager": manager,
        "can_manage": user.has_perm(MANAGE_PERMISSION),
        "own": (
            certification_selectors.certification_result(user=user)
            if certification_selectors.certification_subject(user=user)
            else None
        ),
        "results": certification_selectors.certification_results_all() if manager else [],
        "set_size": certification_selectors.certification_set_size(),
        "composition": sorted(composition.items()),
        "settings_row": workbench_settings_get(),
        "build_form": CertificationBuildForm(),
    }
    return render(request, "grading/protocol/certification.html", ctx)


@require_POST
@permission_required(MANAGE_PERMISSION, raise_exception=True)
def certification_build(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = CertificationBuildForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give a set size between 1 and 1000.")
        return redirect("certification")
    try:
        added = certification_services.certification_set_build(
            size=form.cleaned_data["size"],
            source=form.cleaned_data["source"],
            added_by=request.user,
        )
    except certification_services.CertificationSetError as error:
        messages.error(request, str(error))
        return redirect("certification")
    messages.success(request, f"Added {len(added)} image(s) to the certification set.")
    return redirect("certification")


@require_GET
@permission_required(GRADE_PERMISSION, raise_exception=True)
def quality_queue(request: AuthenticatedHttpRequest) -> HttpResponse:
    # The photographs this user may still decide on: those they read independently (the
    # visibility rule), as the decision "ungradable" is their grade.
    waiting = (
        images_read_independently(user=request.user)
        .filter(quality_review=Image.QualityReview.CHECK)
        .select_related("patient")
    )
    ctx = {
        "images": list(waiting.order_by("quality_score", "id")[:QUALITY_PAGE_SIZE]),
        "total": waiting.count(),
        "settings_row": workbench_settings_get(),
    }
    return render(request, "grading/protocol/quality_queue.html", ctx)


@require_http_methods(["POST"])
@permission_required(GRADE_PERMISSION, raise_exception=True)
def quality_decide(request: AuthenticatedHttpRequest, image_id: int) -> HttpResponse:
    image = get_object_or_404(Image, pk=image_id)
    form = QualityDecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose 'pass on to grading' or 'ungradable'.")
        return redirect("quality_queue")
    try:
        quality_services.image_quality_decide(
            image=image, user=request.user, decision=form.cleaned_data["decision"]
        )
    except quality_services.QualityDecisionRejected as error:
        messages.error(request, str(error))
        return redirect("quality_queue")
    verb = "passed on to grading" if form.cleaned_data["decision"] == "pass" else "ungradable"
    messages.success(request, f"Image #{image.pk}: {verb}.")
    return redirect("quality_queue")


@require_http_methods(["GET", "POST"])
@permission_required(SETTINGS_PERMISSION, raise_exception=True)
def protocol_settings(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = ProtocolSettingsForm(request.POST or None, instance=workbench_settings_get())
    if request.method == "POST":
        if form.is_valid():
            workbench_settings_update(
                **{name: form.cleaned_data[name] for name in ProtocolSettingsForm.Meta.fields}
            )
            messages.success(request, "Protocol settings saved.")
            return redirect("protocol_settings")
        return render(request, "grading/protocol/settings.html", {"form": form}, status=400)
    return render(request, "grading/protocol/settings.html", {"form": form})


urlpatterns = [
    path("settings/protocol/", protocol_settings, name="protocol_settings"),
    path("certification/", certification, name="certification"),
    path("certification/build/", certification_build, name="certification_build"),
    path("quality/", quality_queue, name="quality_queue"),
    path("quality/<int:image_id>/", quality_decide, name="quality_decide"),
]
