"""Home page, protected image files and the health check."""

from __future__ import annotations

import mimetypes

from django.contrib.auth.decorators import login_not_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import path
from django.views.decorators.http import require_GET

from grading import storage
from grading.http import PATIENT_IMAGE_CACHE_CONTROL, AuthenticatedHttpRequest
from grading.models import Image
from grading.selectors import home as home_selectors
from grading.selectors import images as image_selectors
from grading.selectors.certification import certification_pending_ids
from grading.selectors.drift import drift_status
from grading.views.access import permission_required


@require_GET
def home(request: AuthenticatedHttpRequest) -> HttpResponse:
    # Each role's starting point; a user with several roles (an admin grades too) sees each part.
    user = request.user
    ctx = {
        "counts": image_selectors.image_counts(),
        "admin_home": home_selectors.home_admin()
        if user.has_perm("grading.retrain_model")
        else None,
        "drift": drift_status() if user.has_perm("grading.retrain_model") else None,
        "reviewer_home": home_selectors.home_reviewer()
        if user.has_perm("grading.adjudicate_image")
        else None,
        "clinician_home": home_selectors.home_clinician(user=user)
        if user.has_perm("grading.grade_image")
        else None,
        # A new clinician's certification set: what "Start grading" serves first.
        "certification_left": len(certification_pending_ids(grader=user)),
    }
    return render(request, "grading/home.html", ctx)


@permission_required("grading.view_image", raise_exception=True)
@require_GET
def image_file(request: AuthenticatedHttpRequest, image_id: int) -> FileResponse:
    # Photographs are clinical data: served only to logged-in users, never from a public folder.
    image = get_object_or_404(Image, pk=image_id)
    try:
        # Local file or, with FUNDUS_STORAGE=s3, the bucket's answer streamed through (one GET).
        handle, size = storage.media_open(image.file.name)
    except storage.StorageMissing:
        raise Http404("The image file is missing from storage.") from None
    content_type = mimetypes.guess_type(image.file.name or "")[0] or "application/octet-stream"
    response = FileResponse(handle, content_type=content_type)
    if size is not None:
        response["Content-Length"] = str(size)
    response["Cache-Control"] = PATIENT_IMAGE_CACHE_CONTROL
    return response


@login_not_required
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("", home, name="home"),
    path("images/<int:image_id>/file", image_file, name="image_file"),
    path("healthz", healthz, name="healthz"),
]
