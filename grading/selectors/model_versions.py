"""Reads about model versions: the active one, the registry list, and side-by-side comparison."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet

from grading import storage
from grading.models import GradeLevel, Image, Job, ModelVersion, Prediction

# Plot files a training run writes into the version's folder, in the order the page shows them.
PLOT_FILES = ("confusion.png", "curves.png")
# Every image a version was trained on (sha256, grade, patient_id), a CSV in the version's folder.
TRAINING_SET_FILE = "training_set.csv"
# Out-of-fold predictions of the version's cross-validation (numpy ``.npz``), in its folder.
OOF_FILE = "cv_predictions.npz"


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(state=ModelVersion.State.ACTIVE).first()


def model_versions_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("created_by", "activated_by").order_by(
        "-created_at", "-id"
    )


def model_version_rollback_target() -> ModelVersion | None:
    """The version that was active before the current one (the most recently active retired one)."""
    return (
        ModelVersion.objects.filter(
            state=ModelVersion.State.RETIRED, activated_at__isnull=False, artifact_path__gt=""
        )
        .order_by("-activated_at", "-id")
        .first()
    )


@dataclass(frozen=True)
class TrainingRow:
    sha256: str
    grade: int
    patient_id: str


def model_version_training_set(*, version: ModelVersion) -> list[TrainingRow]:
    """The images ``version`` was trained on, with the grade it learnt; empty when it recorded
    none (versions made before this was recorded: the 0004 migration flagged their predictions
    from their hold-out list)."""

    if not version.artifact_path:
        return []
    path = storage.model_file_local(version.artifact_path, TRAINING_SET_FILE)
    if path is None:
        return []
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return []
    return list(_training_set_read(str(path), stamp))


@functools.lru_cache(maxsize=4)
def _training_set_read(path: str, stamp: int) -> tuple[TrainingRow, ...]:
    """Parsed once per file version: prediction writes ask for it once per batch."""
    import csv

    with open(path, newline="") as file:
        return tuple(
            TrainingRow(sha256=row["sha256"], grade=int(row["grade"]), patient_id=row["patient_id"])
            for row in csv.DictReader(file)
        )


def model_version_training_sha256(*, version: ModelVersion) -> frozenset[str] | None:
    """The sha256 of the images ``version`` was trained on (see ``model_version_training_set``);
    ``None`` when unknown: the version has a model folder but its ``training_set.csv`` is
    missing (deleted, or never copied), so any image may have been trained on."""

    if version.artifact_path and not storage.model_file_local(
        version.artifact_path, TRAINING_SET_FILE
    ):
        return None
    return frozenset(row.sha256 for row in model_version_training_set(version=version))


def model_version_ever_activated() -> bool:
    return ModelVersion.objects.filter(activated_at__isnull=False).exists()


def model_version_training_job(*, version: ModelVersion) -> Job | None:
    return version.jobs.filter(kind=Job.Kind.MODEL_TRAIN).order_by("-created_at").first()


def model_version_training_jobs() -> dict[int, Job]:
    """The latest training job of every version (one query for the registry)."""
    jobs = Job.objects.filter(kind=Job.Kind.MODEL_TRAIN, model_version__isnull=False).order_by(
        "created_at"
    )
    return {job.model_version_id: job for job in jobs if job.model_version_id is not None}


def model_version_took(*, version: ModelVersion, job: Job | None) -> dt.timedelta | None:
    """How long the version took, as the jobs page counts it: its training ``job`` from start to
    finish (training, then predicting every image). Versions without a finished job: from
    creation to the end of training."""
    if job is not None and job.finished_at is not None and job.started_at is not None:
        return job.finished_at - job.started_at
    return version.training_duration


def model_version_auto_activated(*, version: ModelVersion) -> bool:
    """Whether this version's current activation is the automatic one of the first model (setup):
    once someone re-activates it (a rollback), its activation has a person behind it."""
    if version.state != ModelVersion.State.ACTIVE or version.activated_by_id is not None:
        return False
    job = model_version_training_job(version=version)
    return bool(job and job.result.get("auto_activated"))


def model_version_plots(*, version: ModelVersion) -> list[str]:
    """Names of the plot files present in the version's folder."""

    if not version.artifact_path:
        return []
    return [name for name in PLOT_FILES if storage.model_file_local(version.artifact_path, name)]


def model_version_headline(*, version: ModelVersion) -> dict[str, Any]:
    """The version's figures for the registry: from its out-of-fold cross-validation (with 95 %
    intervals) when it has one, else from the single hold-out split older versions recorded.

    ``source``: "cv", "holdout" or None; ``evaluation``: "pending", "done" or "failed" (the
    cross-validation job's state for this version)."""
    metrics = version.metrics or {}
    cv = metrics.get("cv") or {}
    if cv.get("pooled"):
        headline = metrics_headline(cv["pooled"])
        headline.update(
            source="cv",
            folds=cv.get("folds"),
            intervals=cv.get("intervals") or {},
            ece=cv["pooled"].get("ece"),
        )
    else:
        holdout = metrics.get("holdout") or {}
        headline = metrics_headline(holdout)
        headline.update(
            source="holdout" if holdout else None,
            folds=None,
            intervals={},
            ece=holdout.get("ece"),
        )
    headline["evaluation"] = metrics.get("evaluation") or ("done" if headline["source"] else "")
    return headline


def model_version_evaluation_job(*, version: ModelVersion) -> Job | None:
    """The open cross-validation job working on ``version`` (for its progress), if any."""
    return (
        Job.objects.filter(
            kind=Job.Kind.MODEL_EVALUATE, model_version=version, state__in=["queued", "running"]
        )
        .order_by("-created_at")
        .first()
    )


def model_version_evaluation_jobs() -> dict[int, Job]:
    """Open cross-validation jobs by the version they work on (one query for the registry)."""
    jobs = Job.objects.filter(
        kind=Job.Kind.MODEL_EVALUATE, state__in=["queued", "running"], model_version__isnull=False
    ).order_by("created_at")
    return {job.model_version_id: job for job in jobs if job.model_version_id is not None}


def metrics_headline(report: dict[str, Any]) -> dict[str, Any]:
    referable = report.get("referable") or {}
    return {
        "n": report.get("n"),
        "qwk": report.get("qwk"),
        "accuracy": report.get("accuracy"),
        "sensitivity": referable.get("sensitivity"),
        "specificity": referable.get("specificity"),
        "auc": referable.get("auc"),
    }


def grade_scale() -> list[GradeLevel]:
    return list(GradeLevel.objects.order_by("value"))


@dataclass
class VersionComparison:
    """Two versions evaluated on the same images, none of which either was trained on: their
    out-of-fold (cross-validation) predictions, the predictions of images confirmed after they
    were trained, or (older versions) their hold-out images. ``paired``: QWK of ``second`` minus
    QWK of ``first`` with a paired bootstrap 95 % interval and a verdict on ``second``."""

    first: ModelVersion
    second: ModelVersion
    n_images: int
    reports: dict[int, dict[str, Any]] = field(default_factory=dict)  # version id -> report
    disagreements: int = 0
    note: str = ""
    paired: dict[str, Any] | None = None
    # Like with like: "out-of-fold" (both versions' fold models) or "released" (both released
    # models on images neither trained on); images where the two differ are left out and counted.
    basis: str = ""
    mixed_left_out: int = 0


def _like_with_like(
    first: dict[str, HonestPrediction], second: dict[str, HonestPrediction]
) -> tuple[set[str], str, int]:
    """(the images both versions predicted the same way, which way, how many shared images were
    predicted one way by one version and the other way by the other): fold models are compared
    with fold models, released models with released models, never one with the other."""

    def kind(prediction: HonestPrediction) -> str:
        return "out-of-fold" if prediction.source == "out-of-fold" else "released"

    shared = set(first) & set(second)
    by_kind = {
        basis: {sha for sha in shared if kind(first[sha]) == kind(second[sha]) == basis}
        for basis in ("out-of-fold", "released")
    }
    basis = max(by_kind, key=lambda b: (len(by_kind[b]), b == "out-of-fold"))
    mixed = len(shared) - len(by_kind["out-of-fold"]) - len(by_kind["released"])
    return by_kind[basis], basis, mixed


@dataclass(frozen=True)
class HonestPrediction:
    grade: int
    probabilities: list[float]
    source: str  # "out-of-fold", "after training" or "hold-out"


def model_version_honest_predictions(*, version: ModelVersion) -> dict[str, HonestPrediction]:
    """sha256 -> a prediction of ``version`` for an image it was not trained on when making it.

    Versions with cross-validation: the out-of-fold prediction of each training image, plus the
    stored prediction of every image it never trained on. Older versions: the stored
    predictions of their hold-out images."""

    import numpy as np

    honest: dict[str, HonestPrediction] = {}
    stored = Prediction.objects.filter(model_version=version)
    legacy = bool(version.holdout_sha256)
    if legacy:
        stored = stored.filter(image__sha256__in=list(version.holdout_sha256))
        source = "hold-out"
    else:
        stored = stored.filter(
            in_training=False,
            image__grading_state=Image.GradingState.CONFIRMED,
            image__confirmed_grade__isnull=False,
        )
        source = "after training"
    for sha, grade, probabilities in stored.values_list(
        "image__sha256", "predicted_grade_id", "probabilities"
    ).iterator(chunk_size=2000):
        honest[sha] = HonestPrediction(int(grade), list(probabilities), source)
    oof_path = (
        storage.model_file_local(version.artifact_path, OOF_FILE) if version.artifact_path else None
    )
    if oof_path is not None:
        with np.load(oof_path) as oof:
            classes = list(version.class_values)
            scale = [level.value for level in grade_scale()]
            for sha, grade, row in zip(
                oof["sha256"].tolist(), oof["predicted"], oof["probabilities"], strict=True
            ):
                # Stored in scale order, as the Prediction rows are.
                by_grade = dict(zip(classes, row.tolist(), strict=True))
                honest[sha] = HonestPrediction(
                    int(grade), [by_grade.get(g, 0.0) for g in scale], "out-of-fold"
                )
    return honest


def model_versions_compare(*, first: ModelVersion, second: ModelVersion) -> VersionComparison:
    """Both versions on the same images neither was trained on (see
    ``model_version_honest_predictions``), against today's confirmed grades, paired."""
    from django.conf import settings

    from mlcore.evaluation.intervals import paired_qwk_difference
    from mlcore.evaluation.metrics import metrics_report

    comparison = VersionComparison(first=first, second=second, n_images=0)
    predictions = {
        first.pk: model_version_honest_predictions(version=first),
        second.pk: model_version_honest_predictions(version=second),
    }
    shared, comparison.basis, comparison.mixed_left_out = _like_with_like(
        predictions[first.pk], predictions[second.pk]
    )
    if not shared:
        comparison.note = (
            "These versions have no image in common that neither was trained on (no "
            "out-of-fold or hold-out predictions of the same images yet), so they cannot be "
            "compared fairly."
        )
        return comparison
    confirmed = Image.objects.filter(
        sha256__in=shared,
        grading_state=Image.GradingState.CONFIRMED,
        confirmed_ungradable=False,
        confirmed_grade__isnull=False,
    ).values_list("sha256", "confirmed_grade_id", "patient_id")
    truth, patients = {}, {}
    for sha, grade, patient_id in confirmed:
        truth[sha], patients[sha] = grade, patient_id
    common = sorted(truth)
    if not common:
        comparison.note = "None of the images both versions were evaluated on is confirmed now."
        return comparison
    levels = grade_scale()
    classes = [level.value for level in levels]
    referable_from = min(
        (level.value for level in levels if level.is_referable), default=classes[-1]
    )
    y_true = [truth[sha] for sha in common]
    grades: dict[int, list[int]] = {}
    for version in (first, second):
        rows = [predictions[version.pk][sha] for sha in common]
        grades[version.pk] = [row.grade for row in rows]
        comparison.reports[version.pk] = metrics_report(
            y_true,
            grades[version.pk],
            [row.probabilities for row in rows],
            classes=classes,
            referable_from=referable_from,
        )
    comparison.n_images = len(common)
    comparison.disagreements = sum(
        a != b for a, b in zip(grades[first.pk], grades[second.pk], strict=True)
    )
    comparison.paired = paired_qwk_difference(
        y_true,
        grades[first.pk],
        grades[second.pk],
        classes=classes,
        n_resamples=settings.FUNDUS_BOOTSTRAP_RESAMPLES,
        groups=[patients[sha] for sha in common],
    )
    return comparison
