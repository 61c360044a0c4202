"""Training a new model version (worker side): a head on cached features, or a fine-tuned
backbone, on every confirmed grade.

The `model_train` job makes a *candidate*: only an admin activates it, except the very first
version trained at setup (``activate_if_first``) when no version was ever active. A head's
figures come afterwards from the `model_evaluate` job (``grading.services.model_evaluation``);
a fine-tuned version keeps the figures of its grouped hold-out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from grading import storage
from grading.models import Image, Job, ModelVersion
from grading.selectors.model_versions import model_version_ever_activated
from grading.services import ml_config
from grading.services.feature_shards import (
    feature_chunks_summary,
    features_distribute,
    features_prepare_local,
)
from grading.services.jobs import JOB_CONTINUES, Progress, progress_span
from grading.services.model_evaluation import EVALUATION_PENDING, model_evaluate_enqueue
from grading.services.model_versions import model_version_activate, model_version_next_name
from grading.services.predictions import images_predict
from grading.services.training_set import (
    TrainingImage,
    training_data_check,
    training_groups,
    training_images,
    training_set_write,
)

if TYPE_CHECKING:
    from mlcore.features.config import FeatureConfig
    from mlcore.models.finetune import FinetuneConfig
    from mlcore.pipelines.training import TrainingConfig


def model_train_job(*, job: Job, progress: Progress) -> dict[str, Any]:
    """The `model_train` task's work; see ``model_train``. With remote storage, a head retrain
    whose images lack published features first hands their extraction to every ML worker
    (``feature_shards``); ``model_train_continue_job`` then trains, on whichever worker runs
    the last step."""
    if job.params.get("mode", "head") == "head":
        images = training_images()
        training_data_check(images=images)
        chunks = features_distribute(
            job=job,
            config=ml_config.feature_config(),
            image_ids=[image.image_id for image in images],
            then="grading.tasks.model_train_continue",
            progress=progress,
        )
        if chunks:
            return {JOB_CONTINUES: True, "chunks": chunks}
    return model_train_continue_job(job=job, progress=progress)


def model_train_continue_job(*, job: Job, progress: Progress) -> dict[str, Any]:
    """Train (after the distributed extraction, if any) and report; see ``model_train``."""
    version = model_train(job=job, progress=progress)
    auto_activated = False
    if job.params.get("activate_if_first") and not model_version_ever_activated():
        progress(99, f"Activating {version.name}: it is the first model of this installation")
        model_version_activate(version=version, user=job.created_by)
        auto_activated = True
    version.refresh_from_db()
    return {
        "model_version_id": version.pk,
        "model_version": version.name,
        "auto_activated": auto_activated,
        "n_train": version.metrics.get("n_train"),
        "mode": version.metrics.get("mode", "head"),
        "resumed_from_epoch": version.metrics.get("resumed_from_epoch"),
        **feature_chunks_summary(job_id=job.pk),
        "message": (
            f"{version.name} trained and activated (first model)"
            if auto_activated
            else f"{version.name} trained; it is a candidate until an admin activates it"
        ),
    }


def model_train(*, job: Job, progress: Progress) -> ModelVersion:
    """Train a new candidate version on every confirmed grade and predict every image with it.

    The version records the images it was trained on (``training_set.csv`` in its folder), so
    each of its predictions knows whether its image was in the training data. Its figures come
    afterwards from the `model_evaluate` job (grouped k-fold cross-validation on the cached
    features), queued here: the version is usable at once and says "evaluating" until then.
    The version becomes a *candidate* only once its files and predictions are complete; if
    anything fails it is left ``failed`` and the active version is never touched.
    """
    images = training_images()
    training_data_check(images=images)
    classes, referable_from = ml_config.scale_classes()
    mode = job.params.get("mode", "head")
    feature_config = ml_config.feature_config()
    if mode == "finetune":
        feature_config = replace(feature_config, backbones=(settings.FUNDUS_FINETUNE_BACKBONE,))
    training_config = ml_config.training_config_from_settings(
        classes=classes, referable_from=referable_from
    )
    version = _model_version_start(job=job, feature_config=feature_config, classes=classes)
    out_dir = _model_dir(version.name)
    # Remote storage: the photographs, and the features the chunks published, into this
    # worker's cache (mlcore reads local files).
    features_prepare_local(
        config=feature_config,
        names=[image.path.relative_to(settings.MEDIA_ROOT).as_posix() for image in images],
        sha256s=[image.sha256 for image in images] if mode != "finetune" else [],
    )
    try:
        if mode == "finetune":
            progress(1, f"Fine-tuning {version.name} on {len(images)} confirmed images")
            _train_finetuned(
                version=version,
                images=images,
                out_dir=out_dir,
                classes=classes,
                referable_from=referable_from,
                preprocessing=feature_config.preprocessing,
                progress=progress_span(progress, 1, 80),
            )
            # The k-fold evaluation re-trains heads on cached features: it would not measure a
            # fine-tuned network, so a fine-tuned version keeps its grouped hold-out figures.
            return _model_predict_all(version=version, progress=progress, job=None)
        progress(1, f"Training {version.name} on all {len(images)} confirmed images")
        _train_head(
            version=version,
            images=images,
            out_dir=out_dir,
            feature_config=feature_config,
            training_config=training_config,
            progress=progress_span(progress, 1, 80),
        )
        return _model_predict_all(version=version, progress=progress, job=job)
    except BaseException:
        ModelVersion.objects.filter(pk=version.pk, state=ModelVersion.State.TRAINING).update(
            state=ModelVersion.State.FAILED
        )
        raise


def _model_version_start(
    *, job: Job, feature_config: FeatureConfig, classes: tuple[int, ...]
) -> ModelVersion:
    """The new version's row, ``training``, linked to its job."""
    with transaction.atomic():
        version = ModelVersion(
            name=model_version_next_name(),
            state=ModelVersion.State.TRAINING,
            created_by=job.created_by,
            backbones=list(feature_config.backbones),
            preprocessing=feature_config.preprocessing,
            class_values=list(classes),
        )
        # Filled in once training has produced them.
        version.full_clean(
            exclude=["train_counts", "holdout_sha256", "metrics"], validate_constraints=False
        )
        version.save()
        Job.objects.filter(pk=job.pk).update(model_version=version)
    return version


def _train_head(
    *,
    version: ModelVersion,
    images: list[TrainingImage],
    out_dir: Path,
    feature_config: FeatureConfig,
    training_config: TrainingConfig,
    progress: Progress,
) -> None:
    """Train a head on every image's cached features into ``out_dir`` and record it on
    ``version``; its figures are pending until the cross-validation."""
    from mlcore.models.artifact import read_metadata
    from mlcore.pipelines.training import train_model

    result = train_model(
        [image.path for image in images],
        [image.grade for image in images],
        out_dir=out_dir,
        groups=training_groups(images=images),
        feature_config=feature_config,
        training_config=training_config,
        store_dir=ml_config.feature_store_dir(),
        weights_dir=ml_config.weights_dir(),
        progress=progress,
    )
    training_set_write(folder=out_dir, images=images)
    metadata = read_metadata(out_dir)
    # Published before the row points at it: any worker or web server can then fetch it.
    storage.model_folder_upload(folder=out_dir)
    ModelVersion.objects.filter(pk=version.pk).update(
        artifact_path=str(out_dir),
        train_counts={str(k): int(v) for k, v in metadata["training_counts"].items()},
        trained_at=timezone.now(),
        metrics={
            "n_train": result.n_train,
            "evaluation": EVALUATION_PENDING,
            "augmented_copies": result.n_variants,
            "mode": "head",
            "decoding": metadata["head"].get("decoding"),
            "thresholds": metadata["head"].get("thresholds"),
            "temperature": metadata["head"].get("temperature"),
            "epochs": metadata["head"].get("n_epochs"),
            "extraction_seconds": round(result.extraction_seconds, 1),
            "fit_seconds": round(result.fit_seconds, 1),
        },
    )


def finetune_checkpoint_dir(*, images: list[TrainingImage], config: FinetuneConfig) -> Path:
    """Where a fine-tuning run keeps its epoch checkpoints: named after its training data and
    settings, so that the retry of a killed job (a new job, same data) finds them and resumes,
    while a retrain on other data or settings starts afresh."""
    digest = hashlib.sha256(
        json.dumps(
            [config.as_dict(), [(i.sha256, i.grade, i.patient_id) for i in images]],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:20]
    return Path(settings.FUNDUS_MODEL_DIR) / "finetune-checkpoints" / digest


def _train_finetuned(
    *,
    version: ModelVersion,
    images: list[TrainingImage],
    out_dir: Path,
    classes: tuple[int, ...],
    referable_from: int,
    preprocessing: str,
    progress: Progress,
) -> None:
    """Fine-tune (``mlcore.models.finetune``) into ``out_dir`` and record it on ``version``, as
    ``_train_head`` does for a head, with the figures of its grouped hold-out."""
    from mlcore.models.artifact import read_metadata
    from mlcore.models.finetune import train_finetuned_model

    config = ml_config.finetune_config_from_settings(classes=classes)
    checkpoints = finetune_checkpoint_dir(images=images, config=config)
    # Remote storage: resume from what a killed worker published, and publish each epoch's.
    storage.checkpoints_fetch(folder=checkpoints)
    progress = storage.checkpoints_publishing(folder=checkpoints, progress=progress)
    result = train_finetuned_model(
        [image.path for image in images],
        [image.grade for image in images],
        out_dir=out_dir,
        groups=training_groups(images=images),
        config=config,
        holdout_fraction=settings.FUNDUS_FINETUNE_HOLDOUT_PERCENT / 100,
        preprocessing=preprocessing,
        referable_from=referable_from,
        checkpoint_dir=checkpoints,
        weights_dir=ml_config.weights_dir(),
        progress=progress,
    )
    sha_by_path = {str(image.path): image.sha256 for image in images}
    held_out = [sha_by_path[str(path)] for path in result.test_paths]
    held_out_set = set(held_out)
    training_set_write(folder=out_dir, images=[i for i in images if i.sha256 not in held_out_set])
    metadata = read_metadata(out_dir)
    storage.model_folder_upload(folder=out_dir)
    fit = result.fit
    ModelVersion.objects.filter(pk=version.pk).update(
        artifact_path=str(out_dir),
        train_counts={str(k): int(v) for k, v in metadata["training_counts"].items()},
        holdout_sha256=held_out,
        trained_at=timezone.now(),
        metrics={
            "holdout": result.metrics or {},
            "n_train": result.n_train,
            "n_holdout": result.n_test,
            "mode": "finetune",
            "backbone": config.backbone,
            "top_blocks": config.top_blocks,
            "learning_rate": fit.chosen.learning_rate,
            "epochs": fit.chosen.best_epoch,
            "decoding": fit.model.decoding_,
            "temperature": round(fit.model.temperature_, 4),
            "resumed_from_epoch": fit.chosen.resumed_from_epoch,
            "fit_seconds": round(fit.train_seconds, 1),
        },
    )


def _model_predict_all(
    *, version: ModelVersion, progress: Progress, job: Job | None
) -> ModelVersion:
    """Predict every image with the freshly trained version, then make it a candidate (and,
    given its training ``job``, queue its cross-validation)."""
    version.refresh_from_db()
    everything = list(Image.objects.order_by("id"))
    progress(80, f"Predicting {len(everything)} images with {version.name}")
    images_predict(
        images=everything,
        model_version=version,
        progress=progress_span(progress, 80, 99),
        cams=False,
    )
    ModelVersion.objects.filter(pk=version.pk, state=ModelVersion.State.TRAINING).update(
        state=ModelVersion.State.CANDIDATE
    )
    version.refresh_from_db()
    if job is not None:
        model_evaluate_enqueue(version=version, user=job.created_by)
    return version


def _model_dir(name: str) -> Path:
    return Path(settings.FUNDUS_MODEL_DIR) / name
