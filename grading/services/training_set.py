"""The training set: every image with a confirmed gradable grade, and whether it can make a model.

Read by a retrain request (is there enough to train on?), by training itself and by the
augmentation job; ``training_set.csv`` records in a version's folder the set it was trained on.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from grading.models import Image
from grading.selectors.model_versions import TRAINING_SET_FILE

# Below this, a grouped hold-out split says nothing and the head cannot learn: refuse clearly.
MIN_TRAINING_IMAGES = 10
MIN_IMAGES_PER_GRADE_FOR_A_CLASS = 2


class TrainingDataError(ValueError):
    """Not enough confirmed grades to train a model; the message says what is missing."""


@dataclass(frozen=True)
class TrainingImage:
    image_id: int
    sha256: str
    path: Path
    grade: int
    patient_id: int
    perceptual_hash: str = ""


def training_groups(*, images: Sequence[TrainingImage]) -> list[str]:
    """The group of each image for every split (hold-out, inner split, cross-validation): its
    patient, merged with the patients of its near-duplicate photographs."""
    from mlcore.data.near_duplicates import split_groups

    merged = split_groups(
        [f"patient:{image.patient_id}" for image in images],
        [image.perceptual_hash for image in images],
    )
    return [f"group:{group}" for group in merged.tolist()]


def training_images() -> list[TrainingImage]:
    """Images with a confirmed grade: never pending ones, never ones confirmed ungradable."""
    rows = (
        Image.objects.filter(
            grading_state=Image.GradingState.CONFIRMED,
            confirmed_ungradable=False,
            confirmed_grade__isnull=False,
        )
        .order_by("id")
        .values_list("id", "sha256", "file", "confirmed_grade_id", "patient_id", "perceptual_hash")
    )
    media_root = Path(settings.MEDIA_ROOT)
    return [
        TrainingImage(
            image_id=image_id,
            sha256=sha256,
            path=media_root / name,
            grade=int(grade),
            patient_id=patient_id,
            perceptual_hash=picture_hash,
        )
        for image_id, sha256, name, grade, patient_id, picture_hash in rows
    ]


def training_data_check(*, images: list[TrainingImage] | None = None) -> Counter[int]:
    """Per-grade counts of the training set; raises ``TrainingDataError`` if it is too small."""
    images = training_images() if images is None else images
    counts = Counter(image.grade for image in images)
    usable = {grade: n for grade, n in counts.items() if n >= MIN_IMAGES_PER_GRADE_FOR_A_CLASS}
    patients = len({image.patient_id for image in images})
    if len(images) < MIN_TRAINING_IMAGES or len(usable) < 2 or patients < 2:
        raise TrainingDataError(
            f"Not enough confirmed grades to train a model: {len(images)} confirmed gradable "
            f"image(s) from {patients} patient(s), grades {dict(sorted(counts.items())) or '{}'}. "
            f"Training needs at least {MIN_TRAINING_IMAGES} images, two patients and two grades "
            f"with {MIN_IMAGES_PER_GRADE_FOR_A_CLASS}+ images each."
        )
    return counts


def training_set_write(*, folder: Path, images: list[TrainingImage]) -> None:
    """``training_set.csv`` in the version's folder: sha256, grade and patient of every image the
    version was trained on (its predictions of them are flagged ``in_training``, and its
    cross-validation re-uses exactly this set)."""
    with (folder / TRAINING_SET_FILE).open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["sha256", "grade", "patient_id"])
        writer.writerows((image.sha256, image.grade, image.patient_id) for image in images)
