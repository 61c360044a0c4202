"""Reads about model versions: the active one, the registry list, and side-by-side comparison."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet

from grading.models import GradeLevel, Image, Job, ModelVersion, Prediction

# Plot files a training run writes into the version's folder, in the order the page shows them.
PLOT_FILES = ("confusion.png", "curves.png")


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


def model_version_ever_activated() -> bool:
    return ModelVersion.objects.filter(activated_at__isnull=False).exists()


def model_version_training_job(*, version: ModelVersion) -> Job | None:
    return version.jobs.filter(kind=Job.Kind.MODEL_TRAIN).order_by("-created_at").first()


def model_version_auto_activated(*, version: ModelVersion) -> bool:
    """Whether this version was activated automatically as the first model (setup)."""
    job = model_version_training_job(version=version)
    return bool(job and job.result.get("auto_activated"))


def model_version_plots(*, version: ModelVersion) -> list[str]:
    """Names of the plot files present in the version's folder."""
    from pathlib import Path

    if not version.artifact_path:
        return []
    folder = Path(version.artifact_path)
    return [name for name in PLOT_FILES if (folder / name).is_file()]


def model_version_headline(*, version: ModelVersion) -> dict[str, float | int | None]:
    """Hold-out figures for the registry table (None where not available)."""
    return metrics_headline(version.metrics.get("holdout") or {})


def metrics_headline(report: dict[str, Any]) -> dict[str, float | int | None]:
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
    """Two versions evaluated on the same images: those on the hold-out side of both."""

    first: ModelVersion
    second: ModelVersion
    n_images: int
    reports: dict[int, dict[str, Any]] = field(default_factory=dict)  # version id -> report
    disagreements: int = 0
    note: str = ""


def model_versions_compare(*, first: ModelVersion, second: ModelVersion) -> VersionComparison:
    """Metrics of both versions on the images neither was trained on, against today's confirmed
    grades. Uses the stored predictions: every version predicts every image when it is trained."""
    from mlcore.metrics import metrics_report

    comparison = VersionComparison(first=first, second=second, n_images=0)
    shared = set(first.holdout_sha256) & set(second.holdout_sha256)
    if not shared:
        comparison.note = (
            "These versions have no hold-out image in common, so they cannot be compared fairly."
        )
        return comparison
    images = Image.objects.filter(
        sha256__in=shared,
        grading_state=Image.GradingState.CONFIRMED,
        confirmed_ungradable=False,
        confirmed_grade__isnull=False,
    ).values_list("id", "confirmed_grade_id")
    truth = dict(images)
    predictions: dict[int, dict[int, Prediction]] = {first.pk: {}, second.pk: {}}
    for prediction in Prediction.objects.filter(
        model_version__in=[first, second], image_id__in=truth
    ):
        predictions[prediction.model_version_id][prediction.image_id] = prediction
    common = sorted(set(predictions[first.pk]) & set(predictions[second.pk]))
    if not common:
        comparison.note = "Neither version has predictions for the shared hold-out images yet."
        return comparison
    classes = [level.value for level in grade_scale()]
    referable_from = min(
        (level.value for level in grade_scale() if level.is_referable), default=classes[-1]
    )
    y_true = [truth[image_id] for image_id in common]
    for version in (first, second):
        rows = [predictions[version.pk][image_id] for image_id in common]
        comparison.reports[version.pk] = metrics_report(
            y_true,
            [row.predicted_grade_id for row in rows],
            [row.probabilities for row in rows],
            classes=classes,
            referable_from=referable_from,
        )
    comparison.n_images = len(common)
    comparison.disagreements = sum(
        predictions[first.pk][i].predicted_grade_id != predictions[second.pk][i].predicted_grade_id
        for i in common
    )
    return comparison
