"""Test data for model drift: real dataset photographs (as they are, or darkened and blurred like a
failing camera), stored through the upload service so their quality scores are measured for real,
and an active model version with predictions on them."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
from PIL import ImageEnhance, ImageFilter

from grading.models import GradeLevel, Image, ModelVersion, Prediction
from grading.services.images import image_create, image_validate
from tests.factories import patient_make

Transform = Callable[[PIL.Image.Image], PIL.Image.Image]


def dataset_photos(dataset: Path, *, start: int, count: int) -> list[Path]:
    """Graded photographs ``start`` to ``start + count`` of one fixed random order of the whole
    dataset: samples of the same distribution, disjoint when their ranges are."""
    files = sorted(dataset.glob("[0-9]/*.jpg"))
    order = np.random.default_rng(2026).permutation(len(files))
    return [files[i] for i in order[start : start + count]]


def failing_camera(photo: PIL.Image.Image) -> PIL.Image.Image:
    """Under-exposed and out of focus."""
    return ImageEnhance.Brightness(photo).enhance(0.45).filter(ImageFilter.GaussianBlur(2))


def photo_store(path: Path, *, transform: Transform | None = None, confirmed: bool) -> Image:
    photo = PIL.Image.open(path).convert("RGB")
    if transform is not None:
        photo = transform(photo)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=92)
    level = GradeLevel.objects.get(value=int(path.parent.name)) if confirmed else None
    return image_create(
        validated=image_validate(data=buffer.getvalue()),
        patient=patient_make(),
        confirmed_grade=level,
        import_source="import:test" if level is not None else "",
        original_filename=path.name,
    )


def model_probabilities(grade: int, *, key: str) -> list[float]:
    """A plausible model output for a photograph of ``grade``: right 70 % of the time, else a
    neighbouring grade; deterministic per ``key``."""
    rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
    predicted = grade if rng.random() < 0.7 else int(np.clip(grade + rng.choice([-1, 1]), 0, 4))
    probabilities = rng.dirichlet(np.ones(5)) * 0.4
    probabilities[predicted] += 0.6
    return [float(p) for p in probabilities / probabilities.sum()]


def predictions_make(
    images: list[tuple[Image, int]], *, version: ModelVersion, in_training: bool
) -> None:
    Prediction.objects.bulk_create(
        Prediction(
            image=image,
            model_version=version,
            probabilities=(p := model_probabilities(grade, key=image.original_filename)),
            predicted_grade_id=int(np.argmax(p)),
            in_training=in_training,
        )
        for image, grade in images
    )
