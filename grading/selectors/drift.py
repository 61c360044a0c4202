"""Model drift: is the active model still seeing the kind of photographs it was trained on?

Per week of uploads, the active version's predictions on images it never trained on are compared
with its predictions on its own training images: the distribution of predicted grades, of
P(referable) and of the photographs' quality scores, each as a population stability index with
a bootstrap interval (mlcore.evaluation.drift), and the agreement with confirmed grades. A week
alerts when the interval's lower bound of one PSI exceeds FUNDUS_DRIFT_PSI_ALERT and the week
holds at least FUNDUS_DRIFT_MIN_IMAGES images.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from grading.models import ModelVersion, Prediction
from grading.selectors.grading_scale import Scale, scale_get
from mlcore.evaluation.drift import PsiEstimate, population_stability_index, wilson_interval

MEASURES = {
    "grade": "Predicted grade",
    "p_referable": "P(referable)",
    "quality": "Quality score",
}


@dataclass
class Sample:
    grade: list[int] = field(default_factory=list)  # positions in the scale, not values
    p_referable: list[float] = field(default_factory=list)
    quality: list[float] = field(default_factory=list)
    agreed: int = 0
    confirmed: int = 0

    def values(self, measure: str) -> list[float]:
        return [float(v) for v in getattr(self, measure)]


@dataclass(frozen=True)
class DriftWeek:
    week: dt.date
    images: int
    psi: dict[str, PsiEstimate | None]
    agreement: float | None
    agreement_low: float
    agreement_high: float
    confirmed: int
    alerts: list[str]


@dataclass(frozen=True)
class DriftReport:
    version: ModelVersion | None
    reference_images: int
    weeks: list[DriftWeek]
    threshold: float
    min_images: int

    @property
    def latest(self) -> DriftWeek | None:
        return self.weeks[-1] if self.weeks else None

    @property
    def alert_weeks(self) -> list[DriftWeek]:
        return [week for week in self.weeks if week.alerts]


def _week_of(moment: dt.datetime) -> dt.date:
    day = timezone.localtime(moment).date()
    return day - dt.timedelta(days=day.weekday())


@dataclass(frozen=True)
class _ScaleIndex:
    """The scale as the row loop needs it: a grade's position, the referable positions."""

    positions: dict[int, int]
    referable: tuple[int, ...]

    @classmethod
    def of(cls, scale: Scale) -> _ScaleIndex:
        classes = scale.classes
        referable = tuple(i for i, v in enumerate(classes) if v >= scale.referable_from)
        return cls(positions={v: i for i, v in enumerate(classes)}, referable=referable)


_COLUMNS = (
    "probabilities",
    "predicted_grade_id",
    "image__quality_score",
    "image__confirmed_grade_id",
    "image__uploaded_at",
)
_Row = tuple[list[float], int, float | None, int | None, dt.datetime]


def _add(sample: Sample, row: _Row, index: _ScaleIndex, *, confirmed: bool) -> None:
    probabilities, predicted, quality, confirmed_grade, _uploaded = row
    position = index.positions.get(predicted)
    if position is not None:
        sample.grade.append(position)
    sample.p_referable.append(
        sum(float(probabilities[i]) for i in index.referable if i < len(probabilities))
    )
    if quality is not None:
        sample.quality.append(float(quality))
    if confirmed and confirmed_grade is not None:
        sample.confirmed += 1
        sample.agreed += int(confirmed_grade == predicted)


def _reference(version: ModelVersion, index: _ScaleIndex) -> Sample:
    """The version's training images as it predicted them, cached: they change only when
    predictions are refreshed (which changes their count)."""
    from django.core.cache import cache

    rows = Prediction.objects.filter(model_version=version, in_training=True)
    key = f"drift-reference:{version.pk}:{rows.count()}"
    cached = cache.get(key)
    if isinstance(cached, Sample):
        return cached
    reference = Sample()
    for row in rows.values_list(*_COLUMNS).order_by().iterator(chunk_size=5000):
        _add(reference, row, index, confirmed=False)
    cache.set(key, reference, DRIFT_CACHE_SECONDS * 6)
    return reference


def _samples(version: ModelVersion, since: dt.date) -> tuple[Sample, dict[dt.date, Sample]]:
    index = _ScaleIndex.of(scale_get())
    reference = _reference(version, index)
    weeks: dict[dt.date, Sample] = defaultdict(Sample)
    start = timezone.make_aware(dt.datetime.combine(since, dt.time.min))
    rows = Prediction.objects.filter(
        model_version=version, in_training=False, image__uploaded_at__gte=start
    )
    for row in rows.values_list(*_COLUMNS).order_by().iterator(chunk_size=5000):
        _add(weeks[_week_of(row[4])], row, index, confirmed=True)
    return reference, weeks


def _psi(reference: Sample, sample: Sample, measure: str, seed: int) -> PsiEstimate | None:
    ref, smp = reference.values(measure), sample.values(measure)
    if len(ref) < 2 or not smp:
        return None
    return population_stability_index(ref, smp, categorical=measure == "grade", seed=seed)


def _week(reference: Sample, week: dt.date, sample: Sample) -> DriftWeek:
    psi = {m: _psi(reference, sample, m, seed=week.toordinal()) for m in MEASURES}
    images = len(sample.p_referable)
    alerts = [
        MEASURES[m]
        for m, estimate in psi.items()
        if estimate is not None
        and estimate.sample_size >= settings.FUNDUS_DRIFT_MIN_IMAGES
        and estimate.low > settings.FUNDUS_DRIFT_PSI_ALERT
    ]
    low, high = wilson_interval(sample.agreed, sample.confirmed)
    return DriftWeek(
        week=week,
        images=images,
        psi=psi,
        agreement=sample.agreed / sample.confirmed if sample.confirmed else None,
        agreement_low=low,
        agreement_high=high,
        confirmed=sample.confirmed,
        alerts=alerts,
    )


def drift_report(*, weeks: int | None = None) -> DriftReport:
    """The active version's drift, week by week (oldest first) over the last ``weeks`` weeks."""
    count = weeks or settings.FUNDUS_DRIFT_WEEKS
    version = ModelVersion.objects.filter(state=ModelVersion.State.ACTIVE).first()
    threshold, minimum = settings.FUNDUS_DRIFT_PSI_ALERT, settings.FUNDUS_DRIFT_MIN_IMAGES
    if version is None:
        return DriftReport(None, 0, [], threshold, minimum)
    since = _week_of(timezone.now()) - dt.timedelta(weeks=count - 1)
    reference, samples = _samples(version, since)
    report_weeks = [_week(reference, week, samples[week]) for week in sorted(samples)]
    return DriftReport(version, len(reference.p_referable), report_weeks, threshold, minimum)


def drift_metrics() -> Iterator[Metric]:
    """This week's PSI per measure, for Prometheus (and its alert flag)."""
    report = drift_report_cached()
    this_week = _week_of(timezone.now())
    latest = report.latest if report.latest and report.latest.week == this_week else None
    psi = GaugeMetricFamily(
        "fundus_drift_psi",
        "Population stability index of this week's uploads against the training set",
        labels=["measure", "bound"],
    )
    alert = GaugeMetricFamily("fundus_drift_alert", "1 when this week's drift crosses the alert")
    if latest is not None:
        for measure, estimate in latest.psi.items():
            if estimate is not None:
                psi.add_metric([measure, "value"], estimate.value)
                psi.add_metric([measure, "low"], estimate.low)
                psi.add_metric([measure, "high"], estimate.high)
    alert.add_metric([], 1 if latest is not None and latest.alerts else 0)
    yield psi
    yield alert


@dataclass(frozen=True)
class DriftStatus:
    """What the admin home shows: whether a week alerts, and which."""

    active: bool
    alerts: list[str]
    weeks: int

    @property
    def alert(self) -> bool:
        return bool(self.alerts)


def drift_report_cached() -> DriftReport:
    """``drift_report()``, cached for DRIFT_CACHE_SECONDS per active version: the admin home and
    every /metrics scrape must not read the weeks' predictions each time (3-4 s at 100,000, see
    README "Model drift"); drift is a matter of weeks, a few minutes' delay costs nothing. The
    drift page itself always computes afresh."""
    from django.core.cache import cache

    active = ModelVersion.objects.filter(state=ModelVersion.State.ACTIVE).first()
    key = f"drift-report:{active.pk if active else 0}"
    cached = cache.get(key)
    if isinstance(cached, DriftReport):
        return cached
    report = drift_report()
    cache.set(key, report, DRIFT_CACHE_SECONDS)
    return report


def drift_status() -> DriftStatus:
    """The drift report in brief, for the admin home."""
    report = drift_report_cached()
    return DriftStatus(
        active=report.version is not None,
        alerts=[
            f"week of {week.week:%d %b %Y}: {', '.join(week.alerts)}" for week in report.alert_weeks
        ],
        weeks=len(report.weeks),
    )


DRIFT_CACHE_SECONDS = 300
