"""Evaluation of a model version (worker side): grouped k-fold cross-validation of its recipe
over exactly its training set, with bootstrap intervals.

A freshly trained version is usable at once and says "evaluating" until the `model_evaluate`
job has written its figures into ``version.metrics["cv"]``. Only one evaluation job is open at a
time; it picks up every version still waiting (the housekeeping task queues one if none is).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from django.conf import settings
from django.contrib.auth.models import User

from grading import storage
from grading.models import GradeLevel, Image, Job, ModelVersion
from grading.selectors.model_versions import OOF_FILE, TrainingRow, model_version_training_set
from grading.services import ml_config
from grading.services.feature_shards import features_prepare_local
from grading.services.jobs import Progress, QueueUnavailable, job_enqueue, progress_span
from mlcore.data.near_duplicates import split_groups

if TYPE_CHECKING:
    from mlcore.pipelines.training import CVResult, TrainingConfig

logger = logging.getLogger(__name__)

# ``metrics["evaluation"]`` of a version: its figures are being computed, exist, or failed.
EVALUATION_PENDING = "pending"
EVALUATION_DONE = "done"
EVALUATION_FAILED = "failed"


def model_evaluate_enqueue(*, version: ModelVersion, user: User | None = None) -> None:
    """Queue the cross-validation of ``version`` (best effort: if an evaluation is already open,
    it picks this version up when it has finished the one it is on)."""
    try:
        job_enqueue(
            kind=Job.Kind.MODEL_EVALUATE,
            params={"model_version_id": version.pk},
            created_by=user,
            model_version=version,
        )
    except QueueUnavailable as error:
        logger.warning("Cross-validation of %s not queued: %s", version.name, error)


def model_versions_awaiting_evaluation() -> list[ModelVersion]:
    return list(
        ModelVersion.objects.filter(metrics__evaluation=EVALUATION_PENDING)
        .exclude(state__in=[ModelVersion.State.TRAINING, ModelVersion.State.FAILED])
        .order_by("-created_at", "-id")
    )


def model_evaluation_catch_up() -> Job | None:
    """Queue a cross-validation when a version still waits for its figures and no evaluation is
    open (e.g. its request met an evaluation that had just finished its last check, or Redis was
    down). Run by the periodic housekeeping task."""
    if not model_versions_awaiting_evaluation():
        return None
    if Job.objects.filter(
        kind=Job.Kind.MODEL_EVALUATE, state__in=[Job.State.QUEUED, Job.State.RUNNING]
    ).exists():
        return None
    version = model_versions_awaiting_evaluation()[0]
    job, created = job_enqueue(
        kind=Job.Kind.MODEL_EVALUATE,
        params={"model_version_id": version.pk},
        model_version=version,
    )
    return job if created else None


def model_evaluate_job(*, job: Job, progress: Progress) -> dict[str, Any]:
    """The `model_evaluate` task: cross-validate the version it names, then any other version
    still waiting for its figures (only one evaluation job is open at a time)."""
    done: list[str] = []
    first = ModelVersion.objects.filter(pk=job.params.get("model_version_id")).first()
    queue = [first] if first is not None else []
    for _round in range(5):
        for version in queue:
            if version.name in done:
                continue
            Job.objects.filter(pk=job.pk).update(model_version=version)
            model_evaluate(version=version, progress=progress)
            done.append(version.name)
        queue = [v for v in model_versions_awaiting_evaluation() if v.name not in done]
        if not queue:
            break
    return {
        "model_versions": done,
        "message": f"Cross-validated {', '.join(done) or 'nothing'}",
    }


def model_evaluate(*, version: ModelVersion, progress: Progress) -> dict[str, Any]:
    """k-fold cross-validation (grouped by patient, stratified by grade) of the version's recipe
    over exactly its training set, on the cached features (``mlcore``'s ``evaluate_cv``): pooled
    out-of-fold metrics with bootstrap 95 % intervals and ECE go into ``version.metrics["cv"]``;
    the out-of-fold predictions go into the version's folder for paired comparisons."""
    from mlcore.pipelines.training import evaluate_cv

    try:
        rows, paths, hashes = _training_set_on_disk(version)
        feature_config = ml_config.feature_config(
            backbones=version.backbones, preprocessing=version.preprocessing
        )
        # Remote storage: the version's folder, photographs and features in this worker's cache.
        folder = storage.model_folder_local(version.artifact_path)
        features_prepare_local(
            config=feature_config,
            names=[path.relative_to(settings.MEDIA_ROOT).as_posix() for path in paths],
            sha256s=[row.sha256 for row in rows],
        )
        training_config, recipe_source = ml_config.training_config_of_version(
            artifact_path=str(folder),
            classes=tuple(version.class_values),
            referable_from=ml_config.scale_classes()[1],
        )
        progress(2, f"{version.name}: features of {len(rows)} training images")
        y = np.asarray([row.grade for row in rows], dtype=np.int64)
        groups = [
            f"group:{g}"
            for g in split_groups([f"patient:{row.patient_id}" for row in rows], hashes).tolist()
        ]
        cv = evaluate_cv(
            paths,
            [row.grade for row in rows],
            groups=groups,
            feature_config=feature_config,
            training_config=training_config,
            store_dir=ml_config.feature_store_dir(),
            weights_dir=ml_config.weights_dir(),
            progress=progress_span(progress, 2, 85),
        )
        progress(85, f"{version.name}: bootstrap intervals")
        figures = _cv_figures(version, folder, rows, y, groups, cv, training_config)
        figures["recipe_from"] = recipe_source
        metrics = {**version.metrics, "cv": figures, "evaluation": EVALUATION_DONE}
        metrics["ece"] = cv.pooled.get("ece")
        ModelVersion.objects.filter(pk=version.pk).update(metrics=metrics)
        progress(100, f"{version.name}: cross-validated on {y.size} images")
        return figures
    except BaseException:
        version.refresh_from_db()
        ModelVersion.objects.filter(pk=version.pk).update(
            metrics={**version.metrics, "evaluation": EVALUATION_FAILED}
        )
        raise


def _training_set_on_disk(
    version: ModelVersion,
) -> tuple[list[TrainingRow], list[Path], list[str]]:
    """The version's training set, less the images deleted since training (they cannot be
    re-read; the figures say how many remain), with each image's file and perceptual hash
    (near-duplicates are one group in the folds)."""
    rows = model_version_training_set(version=version)
    stored = {
        sha: (Path(settings.MEDIA_ROOT) / name, picture_hash)
        for sha, name, picture_hash in Image.objects.filter(
            sha256__in=[r.sha256 for r in rows]
        ).values_list("sha256", "file", "perceptual_hash")
    }
    rows = [row for row in rows if row.sha256 in stored]
    return rows, [stored[row.sha256][0] for row in rows], [stored[row.sha256][1] for row in rows]


def _cv_figures(
    version: ModelVersion,
    folder: Path,
    rows: list[TrainingRow],
    y: npt.NDArray[np.int64],
    groups: list[str],
    cv: CVResult,
    training_config: TrainingConfig,
) -> dict[str, Any]:
    """Bootstrap intervals of the out-of-fold predictions, which are saved with their confusion
    matrix in the version's folder; returns ``version.metrics["cv"]``."""
    from mlcore.evaluation.intervals import metric_intervals
    from mlcore.evaluation.reports import plot_confusion

    classes = list(version.class_values)
    intervals = metric_intervals(
        y,
        cv.oof_pred,
        cv.oof_proba,
        classes=classes,
        referable_from=training_config.referable_from,
        n_resamples=settings.FUNDUS_BOOTSTRAP_RESAMPLES,
        groups=groups,
    )
    np.savez_compressed(
        folder / OOF_FILE,
        sha256=np.asarray([row.sha256 for row in rows]),
        grade=y,
        predicted=cv.oof_pred,
        probabilities=cv.oof_proba,
    )
    plot_confusion(
        cv.pooled["confusion"],
        folder / "confusion.png",
        classes=classes,
        labels={level.value: level.name for level in GradeLevel.objects.all()},
        title=f"{training_config.n_splits}-fold CV, out-of-fold ({y.size} images)",
    )
    # Published before the version's row says it is evaluated (remote storage).
    for name in (OOF_FILE, "confusion.png"):
        storage.object_upload(
            path=folder / name, name=f"{storage.MODELS_PREFIX}/{folder.name}/{name}"
        )
    return {
        "n": int(y.size),
        "folds": training_config.n_splits,
        "pooled": cv.pooled,
        "intervals": intervals,
        "fold_summary": cv.summary,
        "fit_seconds": [round(seconds, 2) for seconds in cv.fit_seconds],
        "decodings": cv.decodings,
        "bootstrap_resamples": settings.FUNDUS_BOOTSTRAP_RESAMPLES,
        "bootstrap_unit": "patient",
    }
