"""Writes for the photo-quality gate: measure at upload, score against the admin's thresholds,
and a clinician's decision on a photograph in the "check quality" queue."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from grading.models import Grade, Image, WorkbenchSettings
from grading.selectors.worklist import workbench_settings_get
from mlcore.data.quality import (
    QualityMeasures,
    QualityThresholds,
    gradability_score,
    quality_measure_bytes,
)

QUALITY_RESCORE_BATCH = 1000


class QualityDecisionRejected(ValueError):
    """The decision cannot be recorded; the message says why."""


def quality_thresholds_get(settings_row: WorkbenchSettings | None = None) -> QualityThresholds:
    row = settings_row or workbench_settings_get()
    return QualityThresholds(
        min_focus=row.quality_min_focus,
        max_clipped=row.quality_max_clipped,
        min_coverage=row.quality_min_coverage,
        min_resolution=row.quality_min_resolution,
    )


def _gate_on(settings_row: WorkbenchSettings) -> bool:
    return settings.FUNDUS_QUALITY_GATE and settings_row.quality_gate_enabled


def quality_measures_or_none(*, data: bytes) -> QualityMeasures | None:
    """The photograph's quality measures, or None when it cannot be measured. Pure (no
    database): a bulk import measures the next photographs in threads while it stores this one."""
    try:
        return quality_measure_bytes(data)
    except (OSError, ValueError):
        return None


def quality_fields_for(*, data: bytes, measures: QualityMeasures | None = None) -> dict:
    """The quality fields of a new image (measured before its database transaction: decoding is
    slow; ``measures`` when they were taken already). A photograph that cannot be measured is
    stored without them, never refused here."""
    if measures is None:
        measures = quality_measures_or_none(data=data)
    if measures is None:
        return {}
    settings_row = workbench_settings_get()
    score = gradability_score(measures, quality_thresholds_get(settings_row))
    below = _gate_on(settings_row) and score < 0.5
    return {
        "quality_measures": measures.to_dict(),
        "quality_score": round(score, 4),
        "quality_review": Image.QualityReview.CHECK if below else Image.QualityReview.NONE,
    }


def images_quality_rescore() -> int:
    """After the admin changed the thresholds: score every measured image again. Images waiting
    for a check that now pass leave the check queue; decisions already taken stand."""
    settings_row = workbench_settings_get()
    thresholds = quality_thresholds_get(settings_row)
    changed = 0
    batch: list[Image] = []
    rows = Image.objects.exclude(quality_measures={}).only(
        "id", "quality_measures", "quality_score", "quality_review", "grading_state"
    )
    for image in rows.iterator(chunk_size=QUALITY_RESCORE_BATCH):
        score = round(
            gradability_score(QualityMeasures.from_dict(image.quality_measures), thresholds), 4
        )
        review = image.quality_review
        if review in (Image.QualityReview.NONE, Image.QualityReview.CHECK):
            below = _gate_on(settings_row) and score < 0.5
            pending = image.grading_state == Image.GradingState.PENDING
            review = Image.QualityReview.CHECK if below and pending else Image.QualityReview.NONE
        if score != image.quality_score or review != image.quality_review:
            image.quality_score, image.quality_review = score, review
            batch.append(image)
            changed += 1
        if len(batch) >= QUALITY_RESCORE_BATCH:
            Image.objects.bulk_update(batch, ["quality_score", "quality_review"])
            batch = []
    if batch:
        Image.objects.bulk_update(batch, ["quality_score", "quality_review"])
    return changed


def image_quality_decide(*, image: Image, user: User, decision: str) -> Image:
    """``pass``: the photograph goes on to grading. ``ungradable``: the clinician confirms it is
    not gradable; recorded as their grade and the image is confirmed ungradable (re-take)."""
    with transaction.atomic():
        locked = Image.objects.select_for_update().get(pk=image.pk)
        if locked.quality_review != Image.QualityReview.CHECK:
            raise QualityDecisionRejected(
                f"Image #{locked.pk} is not waiting for a quality check (someone decided already)."
            )
        locked.quality_reviewed_by = user
        if decision == "pass":
            locked.quality_review = Image.QualityReview.PASSED
            locked.save(update_fields=["quality_review", "quality_reviewed_by"])
        elif decision == "ungradable":
            grade = Grade(
                image=locked,
                kind=Grade.Kind.GRADER,
                grader=user,
                ungradable=True,
                notes="Confirmed ungradable at the quality check.",
            )
            grade.full_clean()
            grade.save()
            locked.quality_review = Image.QualityReview.UNGRADABLE
            locked.grading_state = Image.GradingState.CONFIRMED
            locked.confirmed_grade = None
            locked.confirmed_ungradable = True
            locked.confirmed_macular_oedema = False
            locked.confirmation_method = Image.ConfirmationMethod.SINGLE
            locked.confirmed_by = user
            locked.confirmed_at = timezone.now()
            locked.full_clean(exclude=["file"])
            locked.save()
        else:
            raise QualityDecisionRejected(f"Unknown decision {decision!r}.")
    image.refresh_from_db()
    return image
