"""Reads for the grading queue: which images still need a given clinician's grade, and in what order.

An image needs ``grades_required`` independent grades from different clinicians. A "slot" on an image is
taken by a saved independent grade or by another clinician's unexpired claim (lease), so two clinicians
working the queue at once are not both served an image that needs only one more grade.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection, Sequence

from django.contrib.auth.models import User
from django.db.models import Count, Exists, F, OuterRef, QuerySet, Subquery
from django.db.models.functions import Abs, Coalesce
from django.utils import timezone

from grading.models import (
    Grade,
    GradingClaim,
    Image,
    Prediction,
    WorkbenchSettings,
)
from grading.request_memo import request_memo
from grading.selectors.abstention import prediction_abstains_q
from grading.selectors.dates import day_start

QUEUE_ORDERS = tuple(WorkbenchSettings.QueueOrder.values)


WORKBENCH_SETTINGS_MEMO_KEY = "workbench_settings"


def _workbench_settings_read() -> WorkbenchSettings:
    found = WorkbenchSettings.objects.order_by("pk").first()
    return found if found is not None else WorkbenchSettings.objects.create()


def workbench_settings_get() -> WorkbenchSettings:
    """The single settings row (the data migration creates it; recreated if someone deleted it),
    read once per request: "Next image" and the grading page consult it five times each."""
    return request_memo(WORKBENCH_SETTINGS_MEMO_KEY, _workbench_settings_read)


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


def grade_current_for(*, image: Image, grader: User) -> Grade | None:
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
    grader: User,
    required: int,
    now: dt.datetime,
) -> QuerySet:
    """``queryset`` narrowed to rows whose image (the field ``image``: ``pk`` on images,
    ``image_id`` on predictions) this clinician has not graded and has a free slot for them."""
    graded_by_me = Grade.objects.filter(
        image=OuterRef(image), grader=grader, kind=Grade.Kind.GRADER
    )
    quality_review = "quality_review" if image == "pk" else "image__quality_review"
    grader_count = (
        Grade.objects.filter(
            image=OuterRef(image),
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
        GradingClaim.objects.filter(image=OuterRef(image), expires_at__gt=now)
        .exclude(grader=grader)
        .order_by()
        .values("image")
        .annotate(count=Count("id"))
        .values("count")
    )
    return (
        queryset.filter(~Exists(graded_by_me))
        # Photographs waiting for a quality check are not graded until a clinician passes them.
        .exclude(**{quality_review: Image.QualityReview.CHECK})
        .alias(
            slots_taken=Coalesce(Subquery(grader_count), 0)
            + Coalesce(Subquery(claims_by_others), 0)
        )
        .filter(slots_taken__lt=required)
    )


def images_needing_grade(
    *,
    grader: User,
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


def worklist_sources(
    *,
    grader: User,
    order: str,
    seed: str = "",
    exclude_ids: Collection[int] = (),
    now: dt.datetime | None = None,
) -> list[QuerySet]:
    """The clinician's queue as image-id querysets to read in turn, best first. Each walks an index
    in queue order and stops as soon as it has the rows asked for, so "Next image" (LIMIT 1) and a
    worklist page read a few rows whatever the length of the queue."""
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
            # An abstention's entropy says nothing: those images queue with the unpredicted.
            predictions = predictions.exclude(prediction_abstains_q())
            if excluded:
                predictions = predictions.exclude(image_id__in=excluded)
            has_prediction = Prediction.objects.filter(
                model_version=active, image=OuterRef("pk"), entropy__isnull=False
            ).exclude(prediction_abstains_q())
            # ...then the images it has not predicted yet (or abstained on), oldest first.
            return [
                predictions.order_by("-entropy", "id").values_list("image_id", flat=True),
                candidates.filter(~Exists(has_prediction))
                .order_by("uploaded_at", "id")
                .values_list("id", flat=True),
            ]
    return [queryset.values_list("id", flat=True) for queryset in ordered]


# The worklist counts and pages the queue up to this many images ("250+" beyond): counting a queue
# of 100,000 exactly would check every pending image against every clinician's grades and claims.
WORKLIST_COUNT_CAP = 250


class QueueIds:
    """The queue's image ids as a sequence for ``Paginator``, read from ``worklist_sources`` one
    page at a time; its length is capped at ``cap`` (see ``capped``)."""

    def __init__(self, sources: list[QuerySet], *, cap: int = WORKLIST_COUNT_CAP):
        self.sources = sources
        self.cap = cap
        self._counts: list[int] | None = None

    def _source_counts(self) -> list[int]:
        if self._counts is None:
            counts, total = [], 0
            for source in self.sources:
                found = source[: self.cap - total].count() if total < self.cap else 0
                counts.append(found)
                total += found
            self._counts = counts
        return self._counts

    def count(self) -> int:
        return sum(self._source_counts())

    def __len__(self) -> int:
        return self.count()

    @property
    def capped(self) -> bool:
        return self.count() >= self.cap

    def __getitem__(self, item: slice) -> list[int]:
        if not isinstance(item, slice):
            raise TypeError("QueueIds supports slices only")
        start = item.start or 0
        stop = min(item.stop if item.stop is not None else self.cap, self.cap)
        ids: list[int] = []
        offset = 0
        for source, count in zip(self.sources, self._source_counts(), strict=True):
            if stop <= offset:
                break
            low, high = max(start - offset, 0), min(stop - offset, count)
            if low < high:
                ids += list(source[low:high])
            offset += count
        return ids


def worklist_ordered_ids(
    *,
    grader: User,
    order: str,
    seed: str = "",
    exclude_ids: Collection[int] = (),
    now: dt.datetime | None = None,
    limit: int | None = None,
) -> list[int]:
    """IDs of the images this clinician may be served next, best first (the first ``limit``)."""
    cap = limit or WORKLIST_COUNT_CAP
    sources = worklist_sources(
        grader=grader, order=order, seed=seed, exclude_ids=exclude_ids, now=now
    )
    return list(QueueIds(sources, cap=cap)[0:cap])


def claim_held(*, grader: User, now: dt.datetime | None = None) -> list[int]:
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


def worklist_counts(*, grader: User, mine: int | None = None) -> dict[str, int]:
    """Headline numbers for the worklist (``mine`` when the caller has already counted it)."""
    today = timezone.localdate()
    start = day_start(today)
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
    """Images whose independent grades disagree, oldest first (the (state, uploaded_at) index)."""
    return (
        Image.objects.filter(grading_state=Image.GradingState.ADJUDICATION)
        .select_related("patient")
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
        .exclude(prediction_abstains_q())  # an abstention gives no grade to disagree with
        .alias(difference=Abs(F("predicted_grade_id") - F("image__confirmed_grade_id")))
        .filter(difference__gte=min_difference)
        .select_related("image", "image__patient", "predicted_grade", "image__confirmed_grade")
        .order_by("-created_at", "-id")
    )


def model_disagreements_count(*, min_difference: int = 2) -> int:
    """How many ``model_disagreements`` there are: a count over every confirmed image's prediction,
    kept in the review cache until a grade or a prediction changes."""
    from grading.selectors.review_cache import review_cached

    return review_cached(
        "model_disagreements",
        (min_difference,),
        lambda: model_disagreements(min_difference=min_difference).count(),
    )
