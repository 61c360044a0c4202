"""Predictions: grade probabilities per image and model version, plus CAM overlays.

The web process only queues work here (``images_predict_enqueue``, ``predictions_refresh_enqueue``);
the `ml` worker runs ``images_predict`` which loads the model artifact and TensorFlow.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from grading import storage
from grading.models import GradeLevel, Image, Job, ModelVersion, Prediction, probabilities_entropy
from grading.selectors.model_versions import model_version_active
from grading.selectors.predictions import cam_path
from grading.services import ml_config
from grading.services.feature_shards import features_distribute, features_prepare_local
from grading.services.jobs import (
    JOB_CONTINUES,
    Progress,
    QueueUnavailable,
    job_enqueue,
    progress_span,
)

logger = logging.getLogger(__name__)

# Images per model call: bounds the memory of one step and sets how often progress is written.
PREDICT_BATCH = 512


def _prediction_errors() -> tuple[type[BaseException], ...]:
    from mlcore.data.preprocessing import ImageLoadError
    from mlcore.pipelines.predict import DomainMismatchError

    return (ImageLoadError, DomainMismatchError, FileNotFoundError, OSError)


# ---------------------------------------------------------------------------------------------
# Requests from the web process


def images_predict_enqueue(*, image_ids: Sequence[int]) -> bool:
    """Queue, on commit, a background prediction of these images with the active version.

    Returns False — never raises — when no version is active or the queue (Redis) is down: an
    upload must never fail because the model is unavailable (the next ``predictions_refresh``
    catches those images up).
    """
    ids = sorted({int(image_id) for image_id in image_ids})
    if not ids:
        return False
    try:
        version = model_version_active()
        if version is None:
            return False
        job_enqueue(
            kind=Job.Kind.IMAGES_PREDICT,
            params={"image_ids": ids, "model_version_id": version.pk},
            model_version=version,
        )
    except QueueUnavailable as error:
        logger.warning("Prediction of images %s not queued: %s", ids, error)
        return False
    except Exception:
        # The contract is "never raises": log loudly instead of failing the upload.
        logger.exception("Prediction of images %s could not be queued", ids)
        return False
    return True


def predictions_refresh_enqueue(*, created_by: User | None = None) -> Job | None:
    """Queue a refresh of the active version's missing predictions and CAMs (or return the
    refresh already open). None when no version is active. Raises ``QueueUnavailable``."""
    if model_version_active() is None:
        return None
    job, _created = job_enqueue(kind=Job.Kind.PREDICTIONS_REFRESH, created_by=created_by)
    return job


# ---------------------------------------------------------------------------------------------
# Worker side


def images_predict_job(*, job: Job, progress: Progress) -> dict[str, Any]:
    """The `images_predict` task: new uploads, predicted by the version active *now* (if the
    admin switched versions since the upload, the new one is the one that should answer)."""
    version = _version_to_predict_with(job)
    if version is None:
        return {"predicted": 0, "message": "No model version to predict with"}
    image_ids = list(job.params.get("image_ids", []))
    if len(image_ids) > settings.FUNDUS_FEATURE_CHUNK_IMAGES:
        # A large import (remote storage): its features are extracted by every ML worker first.
        chunks = features_distribute(
            job=job,
            config=ml_config.feature_config(
                backbones=version.backbones, preprocessing=version.preprocessing
            ),
            image_ids=image_ids,
            then="grading.tasks.images_predict_continue",
            progress=progress,
        )
        if chunks:
            return {JOB_CONTINUES: True, "chunks": chunks}
    return images_predict_continue_job(job=job, progress=progress)


def images_predict_continue_job(*, job: Job, progress: Progress) -> dict[str, Any]:
    """Predict the job's images (after their distributed extraction, if any)."""
    version = _version_to_predict_with(job)
    if version is None:
        return {"predicted": 0, "message": "No model version to predict with"}
    images = list(Image.objects.filter(pk__in=job.params.get("image_ids", [])))
    written = images_predict(images=images, model_version=version, progress=progress, cams=True)
    return {
        "predicted": written,
        "model_version_id": version.pk,
        "message": f"{written} image(s) predicted with {version.name}",
    }


def _version_to_predict_with(job: Job) -> ModelVersion | None:
    version = model_version_active()
    if version is None:
        version = ModelVersion.objects.filter(pk=job.params.get("model_version_id")).first()
    return version


def predictions_refresh_job(*, job: Job, progress: Progress) -> dict[str, Any]:
    """The `predictions_refresh` task: every image lacking a prediction (or a CAM) from the
    active version. Loops if the active version changes while it runs."""
    done_versions: list[str] = []
    total = 0
    for _round in range(3):
        version = model_version_active()
        if version is None or version.name in done_versions:
            break
        total += predictions_refresh(model_version=version, progress=progress)
        done_versions.append(version.name)
    return {
        "predicted": total,
        "model_versions": done_versions,
        "message": f"{total} image(s) predicted or mapped with {', '.join(done_versions) or 'no model'}",
    }


def predictions_refresh(*, model_version: ModelVersion, progress: Progress) -> int:
    """Predict the images ``model_version`` has not predicted, and draw the CAM overlays that
    graders will look at: those of the images still to be graded or adjudicated (a CAM costs a
    forward pass through the backbones of its own; confirmed images do not need one)."""
    missing = list(Image.objects.exclude(predictions__model_version=model_version).order_by("id"))
    if missing:
        images_predict(
            images=missing,
            model_version=model_version,
            progress=progress_span(progress, 0, 50),
            cams=False,
        )
    to_grade = Image.objects.exclude(grading_state=Image.GradingState.CONFIRMED).filter(
        predictions__model_version=model_version
    )
    without_cam = [
        image
        for image in to_grade.order_by("id")
        if not _cam_stored(cam_path(model_version_id=model_version.pk, sha256=image.sha256))
    ]
    if without_cam:
        cams_draw(
            images=without_cam,
            model_version=model_version,
            progress=progress_span(progress, 50, 100),
            step="step 2 of 2",
        )
    progress(
        100,
        f"{len(missing)} prediction(s) and {len(without_cam)} heatmap(s) by {model_version.name}",
    )
    return len(missing) + len(without_cam)


def _cam_stored(path: Path) -> bool:
    """Drawn already, here or (remote storage) by a worker on another machine."""
    if path.is_file():
        return True
    name = path.relative_to(settings.MEDIA_ROOT).as_posix()
    return storage.storage_is_remote() and storage.object_exists(name)


class PredictionFailed(RuntimeError):
    """No image of the request could be predicted; the message lists why."""


def images_predict(
    *,
    images: Sequence[Image],
    model_version: ModelVersion,
    progress: Progress,
    cams: bool = True,
) -> int:
    """Predict ``images`` with ``model_version``: one Prediction row each (a version's prediction
    of an image never changes, so existing rows are kept) and, with ``cams``, a CAM overlay PNG
    of the predicted grade under ``MEDIA_ROOT/cams/<version id>/<sha256>.png``.

    An image that cannot be read or graded (damaged file, a filtered image given to a model
    trained on raw photos) is skipped and logged; if no image at all can be predicted the
    error is raised, so that the job shows it.
    """
    if not images:
        progress(100, "Nothing to predict")
        return 0
    artifact = model_artifact_load(model_version=model_version)
    # Remote storage: this worker's cache gets the photographs and the published features.
    features_prepare_local(
        config=ml_config.feature_config(
            backbones=model_version.backbones, preprocessing=model_version.preprocessing
        ),
        names=[image.file.name for image in images],
        sha256s=[image.sha256 for image in images],
    )
    predicting = progress_span(progress, 0, 50) if cams else progress
    failures: list[str] = []
    # Images whose features are cached (after a retrain: every training image) are predicted in
    # one batch from the store, without opening their files; the rest go through the pipeline.
    predicted, rest = _predict_from_store(model_version, artifact, list(images))
    written = len(predicted)
    if predicted:
        predicting(
            100 * len(predicted) // len(images),
            f"Predicted {len(predicted)} of {len(images)} images from cached features",
        )
    for start in range(0, len(rest), PREDICT_BATCH):
        batch = rest[start : start + PREDICT_BATCH]
        results = _predict_batch(artifact, batch, failures)
        written += _prediction_rows_from(model_version, artifact, results)
        predicted.extend(image for image, _ in results)
        done = len(images) - len(rest) + start + len(batch)
        predicting(
            100 * done // len(images),
            f"Predicted {done} of {len(images)} images with {model_version.name}",
        )
    if cams and predicted:
        cams_draw(
            images=predicted,
            model_version=model_version,
            progress=progress_span(progress, 50, 100),
            failures=failures,
            step="step 2 of 2",
        )
    if failures:
        logger.warning("Predictions with %s skipped: %s", model_version.name, "; ".join(failures))
        if written == 0:
            raise PredictionFailed("No image could be predicted: " + "; ".join(failures[:5]))
    return written


def cams_draw(
    *,
    images: Sequence[Image],
    model_version: ModelVersion,
    progress: Progress,
    failures: list[str] | None = None,
    step: str = "",
) -> int:
    """CAM overlay PNGs of the predicted grade, for images that have none yet. ``step``: which
    part of its job this is ("step 2 of 2"), said in the progress text so that "heatmap 1 of 17"
    beside a bar at half-way reads right."""
    from mlcore.pipelines.cam import cam_overlay_png

    errors = _prediction_errors()
    artifact = None  # loaded for the first map to draw (none, when every map exists)
    drawn = 0
    for index, image in enumerate(images, start=1):
        if _retired(model_version):  # a rollback while this job ran: nobody will see these maps
            progress(
                100,
                f"Stopped after {index - 1} of {len(images)} heatmaps: {model_version.name} "
                "was retired",
            )
            break
        target = cam_path(model_version_id=model_version.pk, sha256=image.sha256)
        if not target.is_file():
            artifact = artifact or model_artifact_load(model_version=model_version)
            try:
                cam_overlay_png(
                    artifact,
                    storage.media_local(image.file.name),
                    target,
                    weights_dir=ml_config.weights_dir(),
                )
                storage.product_upload(
                    name=target.relative_to(settings.MEDIA_ROOT).as_posix(), cache_path=target
                )
                drawn += 1
            except errors as error:
                if failures is None:
                    raise
                failures.append(f"image #{image.pk} (heatmap): {error}")
        where = f", {step}" if step else ""
        progress(
            100 * index // len(images),
            f"Heatmap {index} of {len(images)} ({model_version.name}{where})",
        )
    return drawn


def _retired(model_version: ModelVersion) -> bool:
    return ModelVersion.objects.filter(
        pk=model_version.pk, state=ModelVersion.State.RETIRED
    ).exists()


def _predict_batch(
    artifact: Any, batch: list[Image], failures: list[str]
) -> list[tuple[Image, Any]]:
    """(image, mlcore Prediction) for a batch; one bad image never sinks the others."""
    from mlcore.pipelines.predict import predict_images

    def predict(images: list[Image]) -> list[Any]:
        return predict_images(
            artifact,
            [image.media_path for image in images],
            store_dir=ml_config.feature_store_dir(),
            weights_dir=ml_config.weights_dir(),
        )

    errors = _prediction_errors()
    try:
        return list(zip(batch, predict(batch), strict=True))
    except errors:
        pass  # find the culprit(s) one image at a time
    results: list[tuple[Image, Any]] = []
    for image in batch:
        try:
            results.extend(zip([image], predict([image]), strict=True))
        except errors as error:
            failures.append(f"image #{image.pk}: {error}")
    return results


def _predict_from_store(
    model_version: ModelVersion, artifact: Any, images: list[Image]
) -> tuple[list[Image], list[Image]]:
    """(images predicted from cached features and written, images left to predict from files)."""
    from mlcore.features.store import feature_key
    from mlcore.pipelines.ood import ood_scores_stored
    from mlcore.pipelines.predict import predict_from_store

    if not images:
        return [], []
    rows, proba, grades = predict_from_store(
        artifact,
        [feature_key(image.sha256) for image in images],
        paths=[image.media_path for image in images],
        store_dir=ml_config.feature_store_dir(),
    )
    if not rows:
        return [], images
    done = [images[i] for i in rows]
    ood = ood_scores_stored(
        artifact,
        [feature_key(image.sha256) for image in done],
        store_dir=ml_config.feature_store_dir(),
    )
    _probabilities_write(model_version, artifact, done, proba, grades, ood)
    found = set(rows)
    return done, [image for i, image in enumerate(images) if i not in found]


def _probabilities_write(
    model_version: ModelVersion,
    artifact: Any,
    images: list[Image],
    proba: Any,
    grades: Any,
    ood_scores: Sequence[float | None],
) -> int:
    scale = list(GradeLevel.objects.order_by("value").values_list("value", flat=True))
    columns = {grade: position for position, grade in enumerate(artifact.classes)}
    return prediction_rows_write(
        model_version=model_version,
        image_ids=[image.pk for image in images],
        # Stored in scale order; a grade the model does not know gets probability 0.
        probabilities=[
            [row[columns[grade]] if grade in columns else 0.0 for grade in scale] for row in proba
        ],
        predicted_grades=[int(grade) for grade in grades],
        ood_scores=ood_scores,
    )


def _prediction_rows_from(model_version: ModelVersion, artifact: Any, results: list) -> int:
    from mlcore.pipelines.ood import ood_scores_images

    if not results:
        return 0
    scale = list(GradeLevel.objects.order_by("value").values_list("value", flat=True))
    columns = {grade: position for position, grade in enumerate(artifact.classes)}
    return prediction_rows_write(
        model_version=model_version,
        image_ids=[image.pk for image, _ in results],
        # Stored in scale order; a grade the model does not know gets probability 0.
        probabilities=[
            [result.probabilities[columns[grade]] if grade in columns else 0.0 for grade in scale]
            for _, result in results
        ],
        predicted_grades=[result.grade for _, result in results],
        ood_scores=ood_scores_images(
            artifact,
            [image.media_path for image, _ in results],
            store_dir=ml_config.feature_store_dir(),
            weights_dir=ml_config.weights_dir(),
        ),
    )


_artifact_cache: dict[str, tuple[float, Any]] = {}


def model_artifact_load(*, model_version: ModelVersion) -> Any:
    """The version's loaded model, cached in the worker (loading Keras takes ~0.5 s per call)."""
    from mlcore.models.artifact import METADATA_FILE, load_artifact

    folder = storage.model_folder_local(model_version.artifact_path)
    stamp = (folder / METADATA_FILE).stat().st_mtime
    cached = _artifact_cache.get(str(folder))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    artifact = load_artifact(folder)
    if len(_artifact_cache) >= 2:
        _artifact_cache.clear()
    _artifact_cache[str(folder)] = (stamp, artifact)
    return artifact


def prediction_rows_write(
    *,
    model_version: ModelVersion,
    image_ids: Sequence[int],
    probabilities: Any,
    predicted_grades: Sequence[int],
    ood_scores: Sequence[float | None] | None = None,
) -> int:
    """Store predictions (probabilities in scale order); existing ones are kept as they are.
    ``ood_scores``: each image's out-of-distribution score (None: not measured).

    Each row records whether the version was trained on its image (``in_training``), so that
    agreement figures can leave those optimistic rows out."""
    from grading.selectors.model_versions import model_version_training_sha256

    levels = {level.value: level for level in GradeLevel.objects.all()}
    trained_on = model_version_training_sha256(version=model_version)
    # Unknown training set: fail closed, every image counts as trained on except the ones the
    # version recorded as held out.
    held_out = frozenset(model_version.holdout_sha256 or []) if trained_on is None else None
    shas = (
        dict(Image.objects.filter(pk__in=list(image_ids)).values_list("pk", "sha256"))
        if trained_on is None or trained_on
        else {}
    )

    def in_training(image_id: int) -> bool:
        sha = shas.get(image_id)
        if held_out is not None:
            return sha not in held_out
        return trained_on is not None and sha in trained_on

    rows = [
        Prediction(
            image_id=image_id,
            model_version=model_version,
            probabilities=[float(p) for p in proba],
            entropy=probabilities_entropy(proba),
            predicted_grade=levels[int(grade)],
            in_training=in_training(image_id),
            ood_score=ood,
        )
        for image_id, proba, grade, ood in zip(
            image_ids,
            probabilities,
            predicted_grades,
            ood_scores if ood_scores is not None else [None] * len(image_ids),
            strict=True,
        )
    ]
    with transaction.atomic():
        Prediction.objects.bulk_create(rows, ignore_conflicts=True, batch_size=2000)
    return len(rows)
