"""Reads for the grading queue: which images still need a given clinician's grade, and in what order.

An image needs ``grades_required`` independent grades from different clinicians. A "slot" on an image is
taken by a saved independent grade or by another clinician's unexpired claim (lease), so two clinicians
working the queue at once are not both served an image that needs only one more grade.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Collection, Sequence

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Exists, F, OuterRef, QuerySet, Subquery
from django.db.models.functions import Abs, Coalesce
from django.utils import timezone

from grading.models import Grade, GradingClaim, Image, Prediction, WorkbenchSettings

QUEUE_ORDERS = tuple(WorkbenchSettings.QueueOrder.values)


def workbench_settings_get() -> WorkbenchSettings:
    """The single settings row (the data migration creates it; recreated if someone deleted it)."""
    found = WorkbenchSettings.objects.order_by("pk").first()
    return found if found is not None else WorkbenchSettings.objects.create()


def grades_current(*, image: Image) -> list[Grade]:
    """The latest independent grade of each clinician for this image (corrections replace the old)."""
    # A grade that does not count (an uncertified clinician's, when the admin gates on
    # certification) is kept in the history but neither confirms nor takes a grading slot.
    return list(
        Grade.objects.filter(
            image=image,
            kind=Grade.Kind.GRADER,
            superseded_by__isnull=True,
            counts_towards_confirmation=True,
        )
        .select_related("grader", "grade")
        .order_by("created_at", "id")
    )


def grade_current_for(*, image: Image, grader: AbstractBaseUser) -> Grade | None:
    return (
        Grade.objects.filter(
            image=image, grader=grader, kind=Grade.Kind.GRADER, superseded_by__isnull=True
        )
        .select_related("grade")
        .order_by("-created_at", "-id")
        .first()
    )


def images_needing_grade(
    *,
    grader: AbstractBaseUser,
    grades_required: int | None = None,
    now: dt.datetime | None = None,
) -> QuerySet[Image]:
    """Pending images this clinician has not graded, with a free slot for them (unordered)."""
    required = grades_required or workbench_settings_get().grades_required
    now = now or timezone.now()
    graded_by_me = Grade.objects.filter(image=OuterRef("pk"), grader=grader, kind=Grade.Kind.GRADER)
    grader_count = (
        Grade.objects.filter(
            image=OuterRef("pk"),
            kind=Grade.Kind.GRADER,
            superseded_by__isnull=True,
            counts_towards_confirmation=True,
        )
        .order_by()
        .values("image")
        .annotate(count=Count("grader", distinct=True))
        .values("count")
    )
    claims_by_others = (
        GradingClaim.objects.filter(image=OuterRef("pk"), expires_at__gt=now)
        .exclude(grader=grader)
        .order_by()
        .values("image")
        .annotate(count=Count("id"))
        .values("count")
    )
    return (
        Image.objects.filter(grading_state=Image.GradingState.PENDING)
        # Photographs waiting for a quality check are not graded until a clinician passes them.
        .exclude(quality_review=Image.QualityReview.CHECK)
        .filter(~Exists(graded_by_me))
        .alias(
            slots_taken=Coalesce(Subquery(grader_count), 0)
            + Coalesce(Subquery(claims_by_others), 0)
        )
        .filter(slots_taken__lt=required)
    )


def probabilities_entropy(probabilities: Sequence[float]) -> float:
    """Shannon entropy (nats) of one prediction: highest when the model cannot decide."""
    total = float(sum(probabilities))
    if total <= 0:
        return 0.0
    return -sum((p / total) * math.log(p / total) for p in probabilities if p > 0)


def _random_key(seed: str, image_id: int) -> str:
    # Stable per seed (the user's session) so the list does not reshuffle on every page load,
    # but different between clinicians, so two of them rarely start on the same image.
    return hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest()


def worklist_ordered_ids(
    *,
    grader: AbstractBaseUser,
    order: str,
    seed: str = "",
    exclude_ids: Collection[int] = (),
    now: dt.datetime | None = None,
) -> list[int]:
    """IDs of the images this clinician may be served next, best first."""
    if order not in QUEUE_ORDERS:
        raise ValueError(f"unknown queue order {order!r}; known: {', '.join(QUEUE_ORDERS)}")
    candidates = images_needing_grade(grader=grader, now=now).exclude(pk__in=list(exclude_ids))
    oldest = list(candidates.order_by("uploaded_at", "id").values_list("id", flat=True))
    if order == WorkbenchSettings.QueueOrder.OLDEST:
        return oldest
    if order == WorkbenchSettings.QueueOrder.RANDOM:
        return sorted(oldest, key=lambda image_id: _random_key(seed, image_id))
    # Most uncertain first (active learning): images the active model is least sure about teach it
    # the most once graded. Images without a prediction yet follow, oldest first.
    entropy = image_prediction_entropies(image_ids=oldest)
    position = {image_id: index for index, image_id in enumerate(oldest)}
    return sorted(
        oldest,
        key=lambda image_id: (
            image_id not in entropy,
            -entropy.get(image_id, 0.0),
            position[image_id],
        ),
    )


def image_prediction_entropies(*, image_ids: Collection[int]) -> dict[int, float]:
    """Entropy of the active model's prediction for each image that has one."""
    from grading.selectors.model_versions import model_version_active

    active = model_version_active()
    if active is None or not image_ids:
        return {}
    rows = Prediction.objects.filter(model_version=active, image_id__in=list(image_ids))
    return {
        image_id: probabilities_entropy(probabilities)
        for image_id, probabilities in rows.values_list("image_id", "probabilities")
    }


def claim_held(*, grader: AbstractBaseUser, now: dt.datetime | None = None) -> list[int]:
    """Images this clinician holds an unexpired claim on and has not graded yet, oldest claim first."""
    now = now or timezone.now()
    return list(
        GradingClaim.objects.filter(
            grader=grader,
            expires_at__gt=now,
            image__grading_state=Image.GradingState.PENDING,
        )
        .exclude(
            Exists(
                Grade.objects.filter(image=OuterRef("image"), grader=grader, kind=Grade.Kind.GRADER)
            )
        )
        .order_by("expires_at", "id")
        .values_list("image_id", flat=True)
    )


def worklist_counts(*, grader: AbstractBaseUser) -> dict[str, int]:
    """Headline numbers for the worklist."""
    pending = Image.objects.filter(grading_state=Image.GradingState.PENDING)
    return {
        "mine": images_needing_grade(grader=grader).count(),
        "pending": pending.count(),
        "adjudication": Image.objects.filter(grading_state=Image.GradingState.ADJUDICATION).count(),
        "graded_today": Grade.objects.filter(
            grader=grader,
            kind=Grade.Kind.GRADER,
            created_at__date=timezone.localdate(),
        ).count(),
    }


def images_for_list(*, image_ids: Sequence[int]) -> list[Image]:
    """Images in the given order, with their patient, for a table."""
    by_id = Image.objects.select_related("patient").in_bulk(list(image_ids))
    return [by_id[image_id] for image_id in image_ids if image_id in by_id]


def adjudication_pending() -> QuerySet[Image]:
    """Images whose independent grades disagree, oldest first, with the number of grades."""
    return (
        Image.objects.filter(grading_state=Image.GradingState.ADJUDICATION)
        .select_related("patient")
        .annotate(grader_count=Count("grades", distinct=True))
        .order_by("uploaded_at", "id")
    )


def model_disagreements(*, min_difference: int = 2) -> QuerySet[Prediction]:
    """Confirmed images whose confirmed grade is ``min_difference`` or more grades away from the
    active model's prediction, and that no reviewer has adjudicated yet (an adjudication, even one
    that keeps the grade, is the reviewer's answer to the flag)."""
    from grading.selectors.model_versions import model_version_active

    active = model_version_active()
    if active is None:
        return Prediction.objects.none()
    return (
        Prediction.objects.filter(
            model_version=active,
            image__grading_state=Image.GradingState.CONFIRMED,
            image__confirmed_ungradable=False,
            image__confirmed_grade__isnull=False,
        )
        .exclude(image__confirmation_method=Image.ConfirmationMethod.ADJUDICATION)
        .alias(difference=Abs(F("predicted_grade_id") - F("image__confirmed_grade_id")))
        .filter(difference__gte=min_difference)
        .select_related("image", "image__patient", "predicted_grade", "image__confirmed_grade")
        .order_by("-created_at", "-id")
    )
