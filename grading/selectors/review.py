"""Reads for the agreement review: model predictions against clinician-confirmed grades (each
clinician's grades against the confirmed grade are in ``grader_agreement``, re-exported here).

Every number here comes from ``mlcore.evaluation.metrics`` (the same code that evaluates a model at training time),
so the review page and the model registry can never disagree about what "QWK" means.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any, Literal

import numpy as np
from django.contrib.auth import get_user_model
from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    FloatField,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.expressions import Combinable
from django.db.models.fields.json import KT
from django.db.models.functions import Abs, Cast, Floor, TruncMonth

from grading.models import Grade, Image, ModelVersion, Prediction
from grading.selectors.abstention import prediction_abstains_q
from grading.selectors.dates import day_start
from grading.selectors.grader_agreement import grader_agreement as grader_agreement
from grading.selectors.grading_scale import Scale, scale_get
from grading.selectors.review_cache import review_cached
from mlcore.evaluation import metrics as mlmetrics
from mlcore.evaluation.intervals import patient_confusion_intervals

DateField = Literal["uploaded", "predicted"]

# Sort keys offered on the review table -> the ORM field they order by.
REVIEW_SORTS: dict[str, str] = {
    "image": "image_id",
    "patient": "image__patient__pseudonym",
    "uploaded": "image__uploaded_at",
    "predicted_at": "created_at",
    "confirmed": "confirmed_position",
    "predicted": "predicted_position",
    "disagreement": "disagreement",
}
REVIEW_DEFAULT_SORT = "-disagreement"
# Months with fewer images than this give a QWK too noisy to read as a trend; they are still listed.
MONTH_MIN_IMAGES = 10


def _position_case(field_name: str, scale: Scale) -> Case:
    """A grade's step on the scale (0, 1, 2...), so "disagrees by 2 grades" means two steps even on a
    scale whose values are not consecutive."""
    return Case(
        *[When(**{field_name: value}, then=Value(i)) for i, value in enumerate(scale.classes)],
        output_field=IntegerField(),
    )


# ---------------------------------------------------------------------------------------------
# Model versions


def model_version_default() -> ModelVersion | None:
    """The active version; else the newest version that has predictions (e.g. before activation)."""
    active = ModelVersion.objects.filter(state=ModelVersion.State.ACTIVE).first()
    if active is not None:
        return active
    return (
        ModelVersion.objects.filter(Exists(Prediction.objects.filter(model_version=OuterRef("pk"))))
        .order_by("-created_at", "-id")
        .first()
    )


def model_versions_with_predictions() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(
        Exists(Prediction.objects.filter(model_version=OuterRef("pk")))
    ).order_by("-created_at", "-id")


def graders_with_grades() -> QuerySet:
    """Users who have recorded at least one independent grade."""
    return (
        get_user_model()
        .objects.filter(Exists(Grade.objects.filter(grader=OuterRef("pk"), kind=Grade.Kind.GRADER)))
        .order_by("username")
    )


# ---------------------------------------------------------------------------------------------
# Filtering predictions against confirmed grades


@dataclass(frozen=True)
class ReviewFilters:
    model_version: ModelVersion | None
    date_field: DateField = "uploaded"
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    grader: Any = None  # a User: only images this user graded (any grade they recorded)
    confirmed_grade: int | None = None
    predicted_grade: int | None = None
    min_disagreement: int = 0  # in scale steps; 0 = all
    sort: str = REVIEW_DEFAULT_SORT
    # Also compare images the version was trained on: optimistic, so only when asked.
    include_training: bool = False

    @property
    def selects_on_outcome(self) -> bool:
        """Filters on the grades themselves describe a selection, not the model's performance."""
        return (
            self.confirmed_grade is not None
            or self.predicted_grade is not None
            or self.min_disagreement > 0
        )


def review_filters_key(filters: ReviewFilters, scale: Scale) -> tuple[Any, ...]:
    """What the aggregates depend on: every filter (any added later too) except the table's sort
    order, with model instances by primary key, and the scale."""
    values = tuple(
        (item.name, getattr(getattr(filters, item.name), "pk", getattr(filters, item.name)))
        for item in dataclass_fields(filters)
        if item.name != "sort"
    )
    return (*values, tuple((level.value, level.is_referable) for level in scale.levels))


def _date_path(date_field: DateField) -> str:
    return "image__uploaded_at" if date_field == "uploaded" else "created_at"


def _population_filter(queryset: QuerySet[Prediction], filters: ReviewFilters) -> QuerySet:
    """Filters that choose which images are looked at (dates, grader), not what was graded."""
    path = _date_path(filters.date_field)
    if filters.date_from is not None:
        queryset = queryset.filter(**{f"{path}__gte": day_start(filters.date_from)})
    if filters.date_to is not None:
        # Inclusive end date: everything before the start of the next day.
        queryset = queryset.filter(
            **{f"{path}__lt": day_start(filters.date_to + dt.timedelta(days=1))}
        )
    if filters.grader is not None:
        queryset = queryset.filter(
            Exists(Grade.objects.filter(image=OuterRef("image_id"), grader=filters.grader))
        )
    return queryset


def _honest(queryset: QuerySet[Prediction], filters: ReviewFilters) -> QuerySet[Prediction]:
    """Leave out the images the version was trained on, unless the filters ask for them."""
    return queryset if filters.include_training else queryset.filter(in_training=False)


def _compared_predictions() -> QuerySet[Prediction]:
    """Predictions of images with a confirmed, gradable grade: the pairs that can be compared.
    Abstentions (selectors/abstention.py) gave no grade: they are counted apart, as a rate."""
    return Prediction.objects.filter(
        image__grading_state=Image.GradingState.CONFIRMED,
        image__confirmed_grade__isnull=False,
    ).exclude(prediction_abstains_q())


def review_predictions(*, filters: ReviewFilters, scale: Scale | None = None) -> QuerySet:
    """Predictions of ``filters.model_version`` beside the confirmed grade, filtered and sorted.

    Each row is annotated with ``confirmed_position``, ``predicted_position`` (scale steps) and
    ``disagreement`` (absolute difference in steps).
    """
    scale = scale or scale_get()
    if filters.model_version is None:
        return Prediction.objects.none()
    queryset = _compared_predictions().filter(model_version=filters.model_version)
    queryset = _honest(_population_filter(queryset, filters), filters)
    if filters.confirmed_grade is not None:
        queryset = queryset.filter(image__confirmed_grade_id=filters.confirmed_grade)
    if filters.predicted_grade is not None:
        queryset = queryset.filter(predicted_grade_id=filters.predicted_grade)
    queryset = queryset.annotate(
        confirmed_position=_position_case("image__confirmed_grade_id", scale),
        predicted_position=_position_case("predicted_grade_id", scale),
    ).annotate(disagreement=Abs(F("confirmed_position") - F("predicted_position")))
    if filters.min_disagreement > 0:
        queryset = queryset.filter(disagreement__gte=filters.min_disagreement)
    sort = filters.sort if filters.sort.lstrip("-") in REVIEW_SORTS else REVIEW_DEFAULT_SORT
    descending = sort.startswith("-")
    order = REVIEW_SORTS[sort.lstrip("-")]
    tiebreak = "-id" if descending else "id"
    return queryset.select_related(
        "image", "image__patient", "image__confirmed_grade", "predicted_grade", "model_version"
    ).order_by(f"-{order}" if descending else order, tiebreak)


# The review table's first rows (20 pages of 50) are cached per filter set and sort order.
CACHED_ROWS = 1000


class ReviewRows:
    """The review table's rows as a sequence for ``Paginator``: its length comes from the confusion
    matrix already counted for the metrics, and a page is read in two steps (the ids of the page in
    sort order, then those rows with their image and patient), so the database sorts narrow rows.
    Sorted by disagreement (the default), the counts per disagreement level tell which levels a page
    can come from, and only those are sorted."""

    def __init__(self, *, filters: ReviewFilters, scale: Scale, report: dict[str, Any] | None):
        self.filters = filters
        self.scale = scale
        self.report = report

    def count(self) -> int:
        return int(self.report["n"]) if self.report else 0

    def __len__(self) -> int:
        return self.count()

    def _lowest_level_needed(self, stop: int) -> int:
        """The lowest disagreement level a page ending at row ``stop`` reaches (sorted desc)."""
        matrix = np.asarray(self.report["confusion"]) if self.report else np.zeros((1, 1))
        k = matrix.shape[0]
        per_level = [
            int(sum(matrix[i, j] for i in range(k) for j in range(k) if abs(i - j) == level))
            for level in range(k)
        ]
        seen = 0
        for level in range(k - 1, -1, -1):
            seen += per_level[level]
            if seen >= stop:
                return level
        return 0

    def __getitem__(self, item: slice) -> list[Prediction]:
        if not isinstance(item, slice):
            raise TypeError("ReviewRows supports slices only")
        start, stop = item.start or 0, item.stop if item.stop is not None else self.count()
        if stop <= start or not self.report:
            return []
        if stop <= CACHED_ROWS:
            # The first pages are what people read: their ids are sorted once per filter set and
            # kept with the aggregates (same stamp), so paging and re-sorting back are cheap.
            ids = review_cached(
                "rows",
                (*review_filters_key(self.filters, self.scale), self.filters.sort),
                lambda: self._ids(0, CACHED_ROWS),
            )[start:stop]
        else:
            ids = self._ids(start, stop)
        by_id = review_predictions(filters=self.filters, scale=self.scale).in_bulk(ids)
        return [by_id[pk] for pk in ids if pk in by_id]

    def _ids(self, start: int, stop: int) -> list[int]:
        """Prediction ids of rows ``start:stop`` in the table's sort order."""
        queryset = review_predictions(filters=self.filters, scale=self.scale)
        if self.filters.sort == "-disagreement":
            level = self._lowest_level_needed(stop)
            if level > self.filters.min_disagreement:
                queryset = queryset.filter(disagreement__gte=level)
        return list(queryset.values_list("pk", flat=True)[start:stop])


def review_not_compared_counts(*, filters: ReviewFilters) -> dict[str, int]:
    """Predictions of this version the table leaves out, and why (shown beside the metrics).

    ``training``: confirmed images the version was trained on, left out unless
    ``filters.include_training`` (then 0 are left out, and ``training_included`` says how many
    optimistic rows the figures hold)."""
    if filters.model_version is None:
        return {
            "ungradable": 0,
            "unconfirmed": 0,
            "training": 0,
            "training_included": 0,
            **_abstentions({"abstained": 0, "answered": 0}),
        }
    queryset = _population_filter(
        Prediction.objects.filter(model_version=filters.model_version), filters
    )
    confirmed = Q(image__grading_state=Image.GradingState.CONFIRMED)
    counts = queryset.aggregate(
        ungradable=Count("pk", filter=confirmed & Q(image__confirmed_ungradable=True)),
        unconfirmed=Count("pk", filter=~confirmed),
        trained_on=Count(
            "pk",
            filter=confirmed & Q(image__confirmed_grade__isnull=False, in_training=True),
        ),
        **_abstention_counts(filters),
    )
    trained_on = counts.pop("trained_on")
    return {
        **_abstentions(counts),
        "training": 0 if filters.include_training else trained_on,
        "training_included": trained_on if filters.include_training else 0,
    }


def _abstention_counts(filters: ReviewFilters) -> dict[str, Count]:
    """Among the comparable predictions (confirmed gradable, honest unless asked), those the model
    abstained on and those it answered."""
    comparable = Q(
        image__grading_state=Image.GradingState.CONFIRMED, image__confirmed_grade__isnull=False
    )
    if not filters.include_training:
        comparable &= Q(in_training=False)
    abstains = prediction_abstains_q()
    return {
        "abstained": Count("pk", filter=comparable & abstains),
        "answered": Count("pk", filter=comparable & ~abstains),
    }


def _abstentions(counts: dict[str, Any]) -> dict[str, Any]:
    """``counts`` with the abstention rate (None when nothing was comparable)."""
    total = counts["abstained"] + counts["answered"]
    rate = counts["abstained"] / total if total else None
    return {
        **counts,
        "comparable": total,
        "abstention_rate": rate,
        "abstention_percent": None if rate is None else 100 * rate,
    }


# ---------------------------------------------------------------------------------------------
# Agreement metrics


# Width of the score bins the referable AUC is counted in (see ``mlcore.evaluation.metrics.auc_from_histogram``).
AUC_BINS = 1000


def _confusion_counts(rows: Iterable[tuple[int, int, int]], scale: Scale) -> np.ndarray:
    """A confusion matrix in scale order from (true grade, predicted grade, count) rows."""
    position = {value: i for i, value in enumerate(scale.classes)}
    matrix = np.zeros((len(scale.classes), len(scale.classes)), dtype=np.int64)
    for true, predicted, count in rows:
        matrix[position[true], position[predicted]] += count
    return matrix


def _referable_score(scale: Scale) -> Combinable:
    """P(referable) of a prediction in SQL: the sum of its referable grades' probabilities."""
    terms = [
        Cast(KT(f"probabilities__{i}"), FloatField())
        for i, value in enumerate(scale.classes)
        if value >= scale.referable_from
    ]
    total: Combinable = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def review_referable_auc(*, predictions: QuerySet, scale: Scale) -> float | None:
    """Referable-DR ROC AUC of the filtered predictions, from a histogram counted in SQL."""
    if not any(v >= scale.referable_from for v in scale.classes) or all(
        v >= scale.referable_from for v in scale.classes
    ):
        return None
    referable_values = [v for v in scale.classes if v >= scale.referable_from]
    rows = (
        predictions.order_by()
        .annotate(
            score_bin=Floor(_referable_score(scale) * AUC_BINS),
            truly_referable=Case(
                When(image__confirmed_grade_id__in=referable_values, then=Value(1)),
                default=Value(0),
                output_field=IntegerField(),
            ),
        )
        .filter(score_bin__isnull=False)
        .values("truly_referable", "score_bin")
        .annotate(n=Count("pk"))
        .values_list("truly_referable", "score_bin", "n")
    )
    positives = np.zeros(AUC_BINS + 1, dtype=np.int64)
    negatives = np.zeros(AUC_BINS + 1, dtype=np.int64)
    for referable, score_bin, count in rows:
        target = positives if referable else negatives
        target[min(max(int(score_bin), 0), AUC_BINS)] += count
    return mlmetrics.auc_from_histogram(positives, negatives)


def review_metrics(*, predictions: QuerySet, scale: Scale | None = None) -> dict[str, Any] | None:
    """Accuracy, QWK, confusion matrix, referable sensitivity/specificity (and AUC from the
    probabilities) of the model against the confirmed grades, for the filtered set.

    Counted in the database (a confusion matrix and a histogram of referable scores), so the cost
    does not grow in Python with the number of images; the numbers come from the same
    ``mlcore.evaluation.metrics`` formulas as the registry's.
    """
    scale = scale or scale_get()
    rows = (
        predictions.order_by()
        .values("image__confirmed_grade_id", "predicted_grade_id")
        .annotate(n=Count("pk"))
        .values_list("image__confirmed_grade_id", "predicted_grade_id", "n")
    )
    matrix = _confusion_counts(rows, scale)
    if matrix.sum() == 0:
        return None
    report = mlmetrics.metrics_report_from_confusion(
        matrix,
        classes=scale.classes,
        referable_from=scale.referable_from,
        referable_auc=review_referable_auc(predictions=predictions, scale=scale),
    )
    # A filtered set is often small: every figure carries its 95 % interval, resampling
    # patients (their eyes and visits are not independent images).
    report["intervals"] = patient_confusion_intervals(
        _patient_confusion_counts(predictions, scale),
        referable_position=sum(1 for grade in scale.classes if grade < scale.referable_from),
    )
    return report


def _patient_confusion_counts(predictions: QuerySet, scale: Scale) -> np.ndarray:
    """One confusion matrix per patient (P, k, k), counted in the database."""
    rows = (
        predictions.order_by()
        .values("image__patient_id", "image__confirmed_grade_id", "predicted_grade_id")
        .annotate(n=Count("pk"))
        .values_list("image__patient_id", "image__confirmed_grade_id", "predicted_grade_id", "n")
    )
    position = {value: i for i, value in enumerate(scale.classes)}
    patients: dict[int, int] = {}
    cells: list[tuple[int, int, int, int]] = []
    for patient, true, predicted, count in rows:
        index = patients.setdefault(patient, len(patients))
        cells.append((index, position[true], position[predicted], count))
    k = len(scale.classes)
    matrices = np.zeros((len(patients), k, k), dtype=np.int64)
    for index, true_position, predicted_position, count in cells:
        matrices[index, true_position, predicted_position] += count
    return matrices


def review_summary(*, filters: ReviewFilters, scale: Scale | None = None) -> dict[str, Any]:
    """The review page's aggregates for these filters (cached until the data changes): the
    metrics ``report``, the monthly QWK ``series`` and the ``not_compared`` counts."""
    scale = scale or scale_get()

    def compute() -> dict[str, Any]:
        predictions = review_predictions(filters=filters, scale=scale)
        return {
            "report": review_metrics(predictions=predictions, scale=scale),
            "series": review_qwk_by_month(filters=filters, scale=scale),
            "not_compared": review_not_compared_counts(filters=filters),
        }

    return review_cached("summary", review_filters_key(filters, scale), compute)


@dataclass
class MonthPoint:
    month: dt.date
    n: int
    qwk: float
    accuracy: float

    @property
    def is_reliable(self) -> bool:
        return self.n >= MONTH_MIN_IMAGES


@dataclass
class VersionSeries:
    model_version: ModelVersion
    points: list[MonthPoint] = field(default_factory=list)

    @property
    def n(self) -> int:
        return sum(point.n for point in self.points)


def review_qwk_by_month(
    *, filters: ReviewFilters, scale: Scale | None = None
) -> list[VersionSeries]:
    """QWK of every model version per month (of upload or of prediction, as ``filters.date_field``).

    Only the population filters (dates, grader) apply here: filtering on grades or on disagreement
    would select the outcome and make a trend of QWK meaningless.
    """
    scale = scale or scale_get()
    month = TruncMonth(_date_path(filters.date_field))
    rows = (
        _honest(_population_filter(_compared_predictions(), filters), filters)
        .order_by()
        .annotate(month=month)
        .values("model_version_id", "month", "image__confirmed_grade_id", "predicted_grade_id")
        .annotate(n=Count("pk"))
        .values_list(
            "model_version_id", "month", "image__confirmed_grade_id", "predicted_grade_id", "n"
        )
    )
    cells: dict[tuple[int, dt.date], list[tuple[int, int, int]]] = defaultdict(list)
    for version_id, month_start, confirmed, predicted, count in rows:
        month_date = month_start.date() if isinstance(month_start, dt.datetime) else month_start
        cells[(version_id, month_date)].append((confirmed, predicted, count))
    versions = {
        version.pk: version
        for version in ModelVersion.objects.filter(pk__in={key[0] for key in cells})
    }
    series: dict[int, VersionSeries] = {}
    for (version_id, month_date), counts in sorted(cells.items(), key=lambda kv: kv[0]):
        matrix = _confusion_counts(counts, scale)
        entry = series.setdefault(version_id, VersionSeries(model_version=versions[version_id]))
        entry.points.append(
            MonthPoint(
                month=month_date,
                n=int(matrix.sum()),
                qwk=mlmetrics.qwk_from_confusion(matrix),
                accuracy=float(np.trace(matrix) / matrix.sum()),
            )
        )
    return sorted(series.values(), key=lambda s: (s.model_version.created_at, s.model_version.pk))
