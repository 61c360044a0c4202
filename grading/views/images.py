"""The image viewer's renderings and the CAM overlay (clinical data: login and permission,
private caching)."""

from __future__ import annotations

from pathlib import Path

from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.views.decorators.http import require_GET

from grading.http import PATIENT_IMAGE_CACHE_CONTROL, AuthenticatedHttpRequest
from grading.models import Image
from grading.selectors.assistance import (
    ModelView,
    model_view_for,
    prediction_cam_file,
    prediction_hidden,
)
from grading.services import renderings
from grading.views.access import VIEW_IMAGE_PERMISSION, permission_required


def viewer_ctx(image: Image, model_view: ModelView) -> dict[str, object]:
    """The image viewer's modes (original and renderings) and the CAM overlay's address."""
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


def _png_response(path: Path) -> FileResponse:
    response = FileResponse(open(path, "rb"), content_type="image/png")  # noqa: SIM115
    response["Cache-Control"] = PATIENT_IMAGE_CACHE_CONTROL
    return response


@require_GET
@permission_required(VIEW_IMAGE_PERMISSION, raise_exception=True)
def image_view(request: AuthenticatedHttpRequest, image_id: int, mode: str) -> FileResponse:
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
def image_cam(request: AuthenticatedHttpRequest, image_id: int) -> HttpResponse | FileResponse:
    image = get_object_or_404(Image, pk=image_id)
    # The map reveals the model's opinion: a blinded first grader gets it only after grading.
    if prediction_hidden(image=image, user=request.user):
        return HttpResponse(
            "The model's view is hidden until you save your grade.",
            status=403,
            content_type="text/plain",
        )
    model_view = model_view_for(image=image, user=request.user, reveal=True)
    # An abstention has no grade whose map could be shown.
    prediction = model_view.prediction if model_view.state == "ready" else None
    cam = prediction_cam_file(prediction=prediction) if prediction is not None else None
    if cam is None:
        raise Http404("No class activation map is available for this image.")
    return _png_response(cam)


urlpatterns = [
    path("images/<int:image_id>/view/<str:mode>.png", image_view, name="image_view"),
    path("images/<int:image_id>/cam.png", image_cam, name="image_cam"),
]
