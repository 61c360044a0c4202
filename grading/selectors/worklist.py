"""Reads for the grading queue: which images still need a given clinician's grade, and in what order.

An image needs ``grades_required`` independent grades from different clinicians. A "slot" on an image is
taken by a saved independent grade or by another clinician's unexpired claim (lease), so two clinicians
working the queue at once are not both served an image that needs only one more grade.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Case, Count, Exists, F, OuterRef, QuerySet, Subquery, Value, When
from django.db.models.functions import Abs, Coalesce
from django.utils import timezone

from grading.models import (
    Grade,
    GradingClaim,
    Image,
    Prediction,
    WorkbenchSettings,
)

QUEUE_ORDERS = tuple(WorkbenchSettings.QueueOrder.values)


def workbench_settings_get() -> WorkbenchSettings:
    """The single settings row (the data migration creates it; recreated if someone deleted it)."""
    found = WorkbenchSettings.objects.order_by("pk").first()
    return found if found is not None else WorkbenchSettings.objects.create()


def grades_current(*, image: Image) -> list[Grade]:
    """The latest independent grade of each clinician for this image (corrections replace the old)."""
    return list(
        Grade.objects.filter(image=image, kind=Grade.Kind.GRADER, superseded_by__isnull=True)
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


def _needing_grade(
    queryset: QuerySet,
    *,
    image: str,
    grader: AbstractBaseUser,
    required: int,
    now: dt.datetime,
) -> QuerySet:
    """``queryset`` narrowed to rows whose image (the field ``image``: ``pk`` on images,
    ``image_id`` on predictions) this clinician has not graded and has a free slot for them."""
    graded_by_me = Grade.objects.filter(
        image=OuterRef(image), grader=grader, kind=Grade.Kind.GRADER
    )
    grader_count = (
        Grade.objects.filter(
            image=OuterRef(image), kind=Grade.Kind.GRADER, superseded_by__isnull=True
        )
        .order_by()
        .values("image")
        .annotate(count=Count("grader", distinct=True))
        .values("count")
    )
    claims_by_others = (
        GradingClaim.objects.filter(image=OuterRef(image), expires_at__gt=now)
        .exclude(grader=grader)
        .order_by()
        .values("image")
        .annotate(count=Count("id"))
        .values("count")
    )
    return (
        queryset.filter(~Exists(graded_by_me))
        .alias(
            slots_taken=Coalesce(Subquery(grader_count), 0)
            + Coalesce(Subquery(claims_by_others), 0)
        )
        .filter(slots_taken__lt=required)
    )


def images_needing_grade(
    *,
    grader: AbstractBaseUser,
    grades_required: int | None = None,
    now: dt.datetime | None = None,
) -> QuerySet[Image]:
    """Pending images this clinician has not graded, with a free slot for them (unordered)."""
    return _needing_grade(
        Image.objects.filter(grading_state=Image.GradingState.PENDING),
        image="pk",
        grader=grader,
        required=grades_required or workbench_settings_get().grades_required,
        now=now or timezone.now(),
    )


def _random_pivot(seed: str) -> str:
    # Stable per seed (the user's session) so the list does not reshuffle on every page load, but
    # different between clinicians, so two of them rarely start on the same image. Content hashes
    # are uniformly random, so walking the sha256 index from a point set by the seed is a shuffled
    # order that the database reads from an index instead of sorting the whole queue.
    return hashlib.sha256(seed.encode()).hexdigest()


def worklist_queryset(
    *,
    grader: AbstractBaseUser,
    order: str,
    seed: str = "",
    exclude_ids: Collection[int] = (),
    now: dt.datetime | None = None,
) -> QuerySet[Image]:
    """The images this clinician may be served next, best first (for a paged list)."""
    if order not in QUEUE_ORDERS:
        raise ValueError(f"unknown queue order {order!r}; known: {', '.join(QUEUE_ORDERS)}")
    candidates = images_needing_grade(grader=grader, now=now)
    if exclude_ids:
        candidates = candidates.exclude(pk__in=list(exclude_ids))
    if order == WorkbenchSettings.QueueOrder.OLDEST:
        return candidates.order_by("uploaded_at", "id")
    if order == WorkbenchSettings.QueueOrder.RANDOM:
        pivot = _random_pivot(seed)
        return candidates.alias(
            wrapped=Case(When(sha256__gte=pivot, then=Value(0)), default=Value(1))
        ).order_by("wrapped", "sha256")
    # Most uncertain first (active learning): images the active model is least sure about teach it
    # the most once graded. Images without a prediction yet follow, oldest first.
    from grading.selectors.model_versions import model_version_active

    active = model_version_active()
    entropy = Prediction.objects.filter(image=OuterRef("pk"), model_version=active).values(
        "entropy"
    )[:1]
    return candidates.alias(entropy=Subquery(entropy)).order_by(
        F("entropy").desc(nulls_last=True), "uploaded_at", "id"
    )


def worklist_ordered_ids(
    *,
    grader: AbstractBaseUser,
    order: str,
    seed: str = "",
    exclude_ids: Collection[int] = (),
    now: dt.datetime | None = None,
    limit: int | None = None,
) -> list[int]:
    """IDs of the images this clinician may be served next, best first (the first ``limit``)."""
    queryset = worklist_queryset(
        grader=grader, order=order, seed=seed, exclude_ids=exclude_ids, now=now
    ).values_list("id", flat=True)
    return list(queryset if limit is None else queryset[:limit])


@dataclass(frozen=True)
class NextSource:
    """One place to take the next image from: image ids in queue order, and the table to lock."""

    image_ids: QuerySet
    lock_of: tuple[str, ...]


def worklist_next_sources(
    *,
    grader: AbstractBaseUser,
    order: str,
    seed: str = "",
    exclude_ids: Collection[int] = (),
    now: dt.datetime | None = None,
) -> list[NextSource]:
    """Where "Next image" takes the next image from, in turn. Each walks an index in queue order
    and stops at the first image that needs this clinician's grade, so it reads a few rows whatever
    the length of the queue (the worklist page's full ordering sorts the whole queue instead)."""
    if order not in QUEUE_ORDERS:
        raise ValueError(f"unknown queue order {order!r}; known: {', '.join(QUEUE_ORDERS)}")
    now = now or timezone.now()
    required = workbench_settings_get().grades_required
    excluded = list(exclude_ids)
    candidates = images_needing_grade(grader=grader, grades_required=required, now=now)
    if excluded:
        candidates = candidates.exclude(pk__in=excluded)
    if order == WorkbenchSettings.QueueOrder.OLDEST:
        ordered = [candidates.order_by("uploaded_at", "id")]
    elif order == WorkbenchSettings.QueueOrder.RANDOM:
        pivot = _random_pivot(seed)
        ordered = [
            candidates.filter(sha256__gte=pivot).order_by("sha256"),
            candidates.filter(sha256__lt=pivot).order_by("sha256"),
        ]
    else:
        from grading.selectors.model_versions import model_version_active

        active = model_version_active()
        if active is None:
            ordered = [candidates.order_by("uploaded_at", "id")]
        else:
            # Walk the active version's predictions by entropy (index), highest first...
            predictions = _needing_grade(
                Prediction.objects.filter(
                    model_version=active,
                    entropy__isnull=False,
                    image__grading_state=Image.GradingState.PENDING,
                ),
                image="image_id",
                grader=grader,
                required=required,
                now=now,
            )
            if excluded:
                predictions = predictions.exclude(image_id__in=excluded)
            has_prediction = Prediction.objects.filter(
                model_version=active, image=OuterRef("pk"), entropy__isnull=False
            )
            # ...then the images it has not predicted yet, oldest first.
            return [
                NextSource(
                    image_ids=predictions.order_by("-entropy", "id").values_list(
                        "image_id", flat=True
                    ),
                    lock_of=("image",),
                ),
                NextSource(
                    image_ids=candidates.filter(~Exists(has_prediction))
                    .order_by("uploaded_at", "id")
                    .values_list("id", flat=True),
                    lock_of=("self",),
                ),
            ]
    return [
        NextSource(image_ids=queryset.values_list("id", flat=True), lock_of=("self",))
        for queryset in ordered
    ]


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


def worklist_counts(*, grader: AbstractBaseUser, mine: int | None = None) -> dict[str, int]:
    """Headline numbers for the worklist (``mine`` when the caller has already counted it)."""
    today = timezone.localdate()
    start = timezone.make_aware(dt.datetime.combine(today, dt.time.min))
    by_state = dict(
        Image.objects.filter(
            grading_state__in=[Image.GradingState.PENDING, Image.GradingState.ADJUDICATION]
        )
        .order_by()
        .values("grading_state")
        .annotate(n=Count("id"))
        .values_list("grading_state", "n")
    )
    return {
        "mine": images_needing_grade(grader=grader).count() if mine is None else mine,
        "pending": by_state.get(Image.GradingState.PENDING, 0),
        "adjudication": by_state.get(Image.GradingState.ADJUDICATION, 0),
        # A range on created_at (not __date) so the (grader, created_at) index answers it.
        "graded_today": Grade.objects.filter(
            grader=grader,
            kind=Grade.Kind.GRADER,
            created_at__gte=start,
            created_at__lt=start + dt.timedelta(days=1),
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
