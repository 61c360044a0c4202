"""Reads about model predictions and their class activation maps (CAM overlays)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from grading import storage
from grading.models import Image, ModelVersion, Prediction
from grading.selectors.model_versions import model_version_active


def cam_path(*, model_version_id: int, sha256: str) -> Path:
    """Where the worker writes the CAM overlay of an image for a version (the file convention
    other areas rely on): ``MEDIA_ROOT/cams/<model_version_id>/<sha256>.png``."""
    return Path(settings.MEDIA_ROOT) / "cams" / str(int(model_version_id)) / f"{sha256}.png"


def prediction_for_image(
    *, image: Image, model_version: ModelVersion | None = None
) -> Prediction | None:
    """The image's prediction by ``model_version`` (default: the active version), if any."""
    version = model_version or model_version_active()
    if version is None:
        return None
    return (
        Prediction.objects.select_related("predicted_grade", "model_version")
        .filter(image=image, model_version=version)
        .first()
    )


def prediction_cam_path(*, prediction: Prediction) -> Path | None:
    """The CAM overlay PNG of the prediction's grade, or None if the worker has not written it."""
    path = cam_path(model_version_id=prediction.model_version_id, sha256=prediction.image.sha256)
    # Drawn by a worker on another machine: the bucket has it (remote storage only).
    return storage.media_cached(path)


def predictions_missing_count(*, model_version: ModelVersion) -> int:
    # One prediction per image and version (a unique constraint): two index counts instead of an
    # anti-join over every image.
    return Image.objects.count() - Prediction.objects.filter(model_version=model_version).count()
