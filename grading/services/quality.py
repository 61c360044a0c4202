"""Writes for the photo-quality gate: measure at upload, score against the admin's thresholds,
and a clinician's decision on a photograph in the "check quality" queue."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from grading.models import Grade, Image, WorkbenchSettings
from grading.selectors.worklist import workbench_settings_get
from grading.services.grades import GradeInput, GradeRejected, grade_save
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


QUALITY_UNGRADABLE_NOTE = "Ungradable at the quality check."


def _ungradable_grade_record(*, image: Image, user: User) -> None:
    """The "ungradable" decision is one reader's grade: the same certification gate, the same
    number of readers as any grade (``grade_save``); the image is confirmed ungradable only when
    the grades say so."""
    if Grade.objects.filter(image=image, grader=user, kind=Grade.Kind.GRADER).exists():
        raise QualityDecisionRejected(
            f"You have already graded image #{image.pk}; correct your grade on its grading page."
        )
    try:
        grade_save(
            image=image,
            grader=user,
            choice=GradeInput(grade=None, ungradable=True, notes=QUALITY_UNGRADABLE_NOTE),
        )
    except GradeRejected as error:
        raise QualityDecisionRejected(str(error)) from error
    image.refresh_from_db()
    if image.grading_state == Image.GradingState.CONFIRMED and image.confirmed_ungradable:
        image.quality_review = Image.QualityReview.UNGRADABLE
        image.quality_reviewed_by = user
        image.save(update_fields=["quality_review", "quality_reviewed_by"])


def image_quality_decide(*, image: Image, user: User, decision: str) -> Image:
    """``pass``: the photograph goes on to grading. ``ungradable``: the clinician's grade says it
    cannot be graded (``_ungradable_grade_record``); it stays in the check queue of the other
    readers until the grades confirm it ungradable (a re-take) or it goes on to grading."""
    if decision not in ("pass", "ungradable"):
        raise QualityDecisionRejected(f"Unknown decision {decision!r}.")
    with transaction.atomic():
        locked = Image.objects.select_for_update().get(pk=image.pk)
        if locked.quality_review != Image.QualityReview.CHECK:
            raise QualityDecisionRejected(
                f"Image #{locked.pk} is not waiting for a quality check (someone decided already)."
            )
        if decision == "pass":
            locked.quality_review = Image.QualityReview.PASSED
            locked.quality_reviewed_by = user
            locked.save(update_fields=["quality_review", "quality_reviewed_by"])
        else:
            _ungradable_grade_record(image=locked, user=user)
    image.refresh_from_db()
    return image
