"""Reads for the agreement review: model predictions against clinician-confirmed grades, and each
clinician's grades against the confirmed grade.

Every number here comes from ``mlcore.metrics`` (the same code that evaluates a model at training time),
so the review page and the model registry can never disagree about what "QWK" means.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from django.contrib.auth import get_user_model
from django.db.models import Case, Exists, F, IntegerField, OuterRef, QuerySet, Value, When
from django.db.models.functions import Abs, TruncMonth
from django.utils import timezone

from grading.models import Grade, GradeLevel, Image, ModelVersion, Prediction
from mlcore import metrics as mlmetrics

DateField = Literal["uploaded", "predicted"]
Reference = Literal["final", "independent"]

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


# ---------------------------------------------------------------------------------------------
# The grading scale


@dataclass(frozen=True)
class Scale:
    levels: tuple[GradeLevel, ...]

    @property
    def classes(self) -> list[int]:
        return [level.value for level in self.levels]

    @property
    def referable_from(self) -> int:
        """The lowest grade flagged referable (ICDR: 2, moderate NPDR)."""
        referable = [level.value for level in self.levels if level.is_referable]
        return min(referable) if referable else mlmetrics.REFERABLE_FROM

    def label(self, value: int | None) -> str:
        for level in self.levels:
            if level.value == value:
                return level.name
        return "" if value is None else str(value)


def scale_get() -> Scale:
    return Scale(levels=tuple(GradeLevel.objects.order_by("value")))


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


def _day_start(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


def _date_path(date_field: DateField) -> str:
    return "image__uploaded_at" if date_field == "uploaded" else "created_at"


def _population_filter(queryset: QuerySet[Prediction], filters: ReviewFilters) -> QuerySet:
    """Filters that choose which images are looked at (dates, grader), not what was graded."""
    path = _date_path(filters.date_field)
    if filters.date_from is not None:
        queryset = queryset.filter(**{f"{path}__gte": _day_start(filters.date_from)})
    if filters.date_to is not None:
        # Inclusive end date: everything before the start of the next day.
        queryset = queryset.filter(
            **{f"{path}__lt": _day_start(filters.date_to + dt.timedelta(days=1))}
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
    """Predictions of images with a confirmed, gradable grade: the pairs that can be compared."""
    return Prediction.objects.filter(
        image__grading_state=Image.GradingState.CONFIRMED,
        image__confirmed_grade__isnull=False,
    )


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


def review_not_compared_counts(*, filters: ReviewFilters) -> dict[str, int]:
    """Predictions of this version the table leaves out, and why (shown beside the metrics).

    ``training``: confirmed images the version was trained on, left out unless
    ``filters.include_training`` (then 0 are left out, and ``training_included`` says how many
    optimistic rows the figures hold)."""
    if filters.model_version is None:
        return {"ungradable": 0, "unconfirmed": 0, "training": 0, "training_included": 0}
    queryset = _population_filter(
        Prediction.objects.filter(model_version=filters.model_version), filters
    )
    trained_on = _compared_predictions().filter(pk__in=queryset.values("pk"), in_training=True)
    trained_on_count = trained_on.count()
    return {
        "training": 0 if filters.include_training else trained_on_count,
        "training_included": trained_on_count if filters.include_training else 0,
        "ungradable": queryset.filter(
            image__grading_state=Image.GradingState.CONFIRMED, image__confirmed_ungradable=True
        ).count(),
        "unconfirmed": queryset.exclude(image__grading_state=Image.GradingState.CONFIRMED).count(),
    }


# ---------------------------------------------------------------------------------------------
# Agreement metrics


def agreement_report(
    *,
    y_true: Sequence[int],
    y_pred: Sequence[int],
    probabilities: Sequence[Sequence[float]] | None = None,
    scale: Scale,
) -> dict[str, Any] | None:
    """``mlcore.metrics.metrics_report`` on this scale; ``None`` when there is nothing to compare."""
    if not y_true:
        return None
    proba = None
    if probabilities is not None and all(len(row) == len(scale.classes) for row in probabilities):
        proba = [list(map(float, row)) for row in probabilities]
    return mlmetrics.metrics_report(
        list(y_true),
        list(y_pred),
        proba,
        classes=scale.classes,
        referable_from=scale.referable_from,
    )


def review_metrics(*, predictions: QuerySet, scale: Scale | None = None) -> dict[str, Any] | None:
    """Accuracy, QWK, confusion matrix, referable sensitivity/specificity (and AUC from the
    probabilities) of the model against the confirmed grades, for the filtered set."""
    scale = scale or scale_get()
    y_true: list[int] = []
    y_pred: list[int] = []
    probabilities: list[list[float]] = []
    rows = predictions.order_by().values_list(
        "image__confirmed_grade_id", "predicted_grade_id", "probabilities"
    )
    for confirmed, predicted, proba in rows.iterator(chunk_size=2000):
        y_true.append(confirmed)
        y_pred.append(predicted)
        probabilities.append(proba)
    return agreement_report(y_true=y_true, y_pred=y_pred, probabilities=probabilities, scale=scale)


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
        .annotate(month=month)
        .order_by()
        .values_list("model_version_id", "month", "image__confirmed_grade_id", "predicted_grade_id")
    )
    pairs: dict[tuple[int, dt.date], tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for version_id, month_start, confirmed, predicted in rows.iterator(chunk_size=2000):
        month_date = month_start.date() if isinstance(month_start, dt.datetime) else month_start
        y_true, y_pred = pairs[(version_id, month_date)]
        y_true.append(confirmed)
        y_pred.append(predicted)
    versions = {
        version.pk: version
        for version in ModelVersion.objects.filter(pk__in={key[0] for key in pairs})
    }
    series: dict[int, VersionSeries] = {}
    for (version_id, month_date), (y_true, y_pred) in sorted(pairs.items(), key=lambda kv: kv[0]):
        entry = series.setdefault(version_id, VersionSeries(model_version=versions[version_id]))
        entry.points.append(
            MonthPoint(
                month=month_date,
                n=len(y_true),
                qwk=mlmetrics.quadratic_weighted_kappa(y_true, y_pred, classes=scale.classes),
                accuracy=mlmetrics.accuracy(y_true, y_pred, classes=scale.classes),
            )
        )
    return sorted(series.values(), key=lambda s: (s.model_version.created_at, s.model_version.pk))


# ---------------------------------------------------------------------------------------------
# Grader agreement


@dataclass(frozen=True)
class _GraderPair:
    grader_id: int
    image_id: int
    grade: int | None
    ungradable: bool
    confirmed_grade: int | None
    confirmed_ungradable: bool
    basis: str  # how the reference grade was reached, relative to this grader (see below)


# How the confirmed grade relates to one grader's grade of the same image.
BASIS_IMPORT = "import"  # an imported reference grade: independent of every grader
BASIS_ADJUDICATION = "adjudication"  # set by an adjudicator (someone else)
BASIS_AGREEMENT = "agreement"  # this grader and a second, independent grader agreed
BASIS_AFTER = "after_confirmation"  # graded after the image was already confirmed
BASIS_OWN_SINGLE = "own_single"  # this grader's grade alone confirmed the image: circular
BASIS_OWN_ADJUDICATION = "own_adjudication"  # this grader also adjudicated the image: circular

BASIS_LABELS: dict[str, str] = {
    BASIS_IMPORT: "imported reference",
    BASIS_ADJUDICATION: "adjudicated",
    BASIS_AGREEMENT: "second grader agreed",
    BASIS_AFTER: "graded after confirmation",
    BASIS_OWN_SINGLE: "own single grade (excluded)",
    BASIS_OWN_ADJUDICATION: "own adjudication (excluded)",
}
# Which relations count as a reference for the grader, per reference policy.
REFERENCE_BASES: dict[str, frozenset[str]] = {
    "final": frozenset({BASIS_IMPORT, BASIS_ADJUDICATION, BASIS_AGREEMENT, BASIS_AFTER}),
    "independent": frozenset({BASIS_IMPORT, BASIS_ADJUDICATION, BASIS_AFTER}),
}


def grade_basis(
    *,
    grader_id: int,
    graded_at: dt.datetime,
    confirmation_method: str,
    confirmed_by_id: int | None,
    confirmed_at: dt.datetime | None,
) -> str:
    """How an image's confirmed grade relates to one grader's independent grade of it."""
    method = Image.ConfirmationMethod
    if confirmation_method == method.IMPORT:
        return BASIS_IMPORT
    if confirmation_method == method.ADJUDICATION:
        return BASIS_OWN_ADJUDICATION if confirmed_by_id == grader_id else BASIS_ADJUDICATION
    if confirmed_at is not None and graded_at > confirmed_at:
        return BASIS_AFTER
    if confirmation_method == method.AGREEMENT:
        return BASIS_AGREEMENT
    return BASIS_OWN_SINGLE


@dataclass
class GraderAgreement:
    grader_id: int
    grader_name: str
    n: int
    report: dict[str, Any] | None
    basis_counts: dict[str, int]
    excluded: int
    ungradable_mismatches: int

    @property
    def qwk(self) -> float | None:
        return self.report["qwk"] if self.report else None

    @property
    def accuracy(self) -> float | None:
        return self.report["accuracy"] if self.report else None

    @property
    def sensitivity(self) -> float | None:
        return self.report["referable"]["sensitivity"] if self.report else None

    @property
    def specificity(self) -> float | None:
        return self.report["referable"]["specificity"] if self.report else None

    @property
    def basis_summary(self) -> list[tuple[str, int]]:
        return [(BASIS_LABELS[key], n) for key, n in sorted(self.basis_counts.items()) if n]


def _latest_grader_grades(
    *, date_from: dt.date | None, date_to: dt.date | None
) -> Iterable[_GraderPair]:
    """Each grader's latest non-superseded independent grade of each confirmed image."""
    queryset = Grade.objects.filter(
        kind=Grade.Kind.GRADER,
        grader__isnull=False,
        superseded_by__isnull=True,
        image__grading_state=Image.GradingState.CONFIRMED,
    )
    if date_from is not None:
        queryset = queryset.filter(created_at__gte=_day_start(date_from))
    if date_to is not None:
        queryset = queryset.filter(created_at__lt=_day_start(date_to + dt.timedelta(days=1)))
    rows = queryset.order_by("grader_id", "image_id", "-created_at", "-id").values_list(
        "grader_id",
        "image_id",
        "grade_id",
        "ungradable",
        "created_at",
        "image__confirmed_grade_id",
        "image__confirmed_ungradable",
        "image__confirmation_method",
        "image__confirmed_by_id",
        "image__confirmed_at",
    )
    last_key: tuple[int, int] | None = None
    for row in rows.iterator(chunk_size=2000):
        grader_id, image_id, grade, ungradable, created_at = row[:5]
        confirmed_grade, confirmed_ungradable, method, confirmed_by_id, confirmed_at = row[5:]
        if (grader_id, image_id) == last_key:
            continue  # an older grade of the same grader and image
        last_key = (grader_id, image_id)
        yield _GraderPair(
            grader_id=grader_id,
            image_id=image_id,
            grade=grade,
            ungradable=ungradable,
            confirmed_grade=confirmed_grade,
            confirmed_ungradable=confirmed_ungradable,
            basis=grade_basis(
                grader_id=grader_id,
                graded_at=created_at,
                confirmation_method=method,
                confirmed_by_id=confirmed_by_id,
                confirmed_at=confirmed_at,
            ),
        )


def grader_agreement(
    *,
    reference: Reference = "final",
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    scale: Scale | None = None,
) -> list[GraderAgreement]:
    """Each clinician's latest independent grade of each confirmed image against its confirmed grade.

    A grade that was itself the only basis of the confirmed grade (single grading, or the grader's own
    adjudication) is always left out: comparing it with the confirmed grade would be circular.
    ``reference="final"`` compares with the final grade of every other image, as screening programmes
    do (double-graded images where the second grader agreed count as agreement);
    ``reference="independent"`` keeps only references the grader had no part in (imported reference
    grades, adjudications by someone else, images graded after confirmation).
    """
    if reference not in REFERENCE_BASES:
        raise ValueError(f"reference must be one of {sorted(REFERENCE_BASES)}, got {reference!r}")
    scale = scale or scale_get()
    accepted = REFERENCE_BASES[reference]
    per_grader: dict[int, dict[str, Any]] = {}
    for pair in _latest_grader_grades(date_from=date_from, date_to=date_to):
        entry = per_grader.setdefault(
            pair.grader_id,
            {"true": [], "pred": [], "basis": defaultdict(int), "excluded": 0, "ungradable": 0},
        )
        if pair.basis not in accepted:
            entry["excluded"] += 1
            continue
        if pair.ungradable or pair.confirmed_ungradable:
            # Not on the ordinal scale: counted, but outside QWK and sensitivity.
            if pair.ungradable != pair.confirmed_ungradable:
                entry["ungradable"] += 1
            continue
        entry["true"].append(pair.confirmed_grade)
        entry["pred"].append(pair.grade)
        entry["basis"][pair.basis] += 1
    names = dict(get_user_model().objects.filter(pk__in=per_grader).values_list("pk", "username"))
    results = [
        GraderAgreement(
            grader_id=grader_id,
            grader_name=names.get(grader_id, f"user #{grader_id}"),
            n=len(entry["true"]),
            report=agreement_report(y_true=entry["true"], y_pred=entry["pred"], scale=scale),
            basis_counts=dict(entry["basis"]),
            excluded=entry["excluded"],
            ungradable_mismatches=entry["ungradable"],
        )
        for grader_id, entry in per_grader.items()
    ]
    return sorted(results, key=lambda result: result.grader_name)
