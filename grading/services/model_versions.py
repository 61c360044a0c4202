"""Model versions: retraining from confirmed grades, activation and rollback, automatic retraining.

Training runs in the `ml` worker (``model_train_job``); everything else here is cheap and runs in
the web process. Exactly one version is active at a time: activation retires the current one and
activates the new one in a single transaction, and the database's partial unique constraint
refuses a second active version whatever the race. A new version is always a *candidate*: only an
admin activates it, with one exception — the very first version trained at setup (``bootstrap``)
when no version was ever active, so that a fresh installation grades with a model at once.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from grading.models import GradeLevel, Image, Job, ModelVersion, WorkbenchSettings
from grading.selectors.model_versions import model_version_ever_activated
from grading.services.audit import audit_actor
from grading.services.jobs import Progress, QueueUnavailable, job_enqueue, progress_span

if TYPE_CHECKING:
    from mlcore.features.config import FeatureConfig
    from mlcore.pipelines.training import TrainingConfig

logger = logging.getLogger(__name__)

# Below this, a grouped hold-out split says nothing and the head cannot learn: refuse clearly.
MIN_TRAINING_IMAGES = 10
MIN_IMAGES_PER_GRADE_FOR_A_CLASS = 2


class ModelVersionError(ValueError):
    """The requested change of model version is not possible; the message is for users."""


class TrainingDataError(ValueError):
    """Not enough confirmed grades to train a model; the message says what is missing."""


# ---------------------------------------------------------------------------------------------
# Training set


@dataclass(frozen=True)
class TrainingImage:
    image_id: int
    sha256: str
    path: Path
    grade: int
    patient_id: int


def training_images() -> list[TrainingImage]:
    """Images with a confirmed grade: never pending ones, never ones confirmed ungradable."""
    rows = (
        Image.objects.filter(
            grading_state=Image.GradingState.CONFIRMED,
            confirmed_ungradable=False,
            confirmed_grade__isnull=False,
        )
        .order_by("id")
        .values_list("id", "sha256", "file", "confirmed_grade_id", "patient_id")
    )
    media_root = Path(settings.MEDIA_ROOT)
    return [
        TrainingImage(
            image_id=image_id,
            sha256=sha256,
            path=media_root / name,
            grade=int(grade),
            patient_id=patient_id,
        )
        for image_id, sha256, name, grade, patient_id in rows
    ]


def training_data_check(*, images: list[TrainingImage] | None = None) -> Counter[int]:
    """Per-grade counts of the training set; raises ``TrainingDataError`` if it is too small."""
    images = training_images() if images is None else images
    counts = Counter(image.grade for image in images)
    usable = {grade: n for grade, n in counts.items() if n >= MIN_IMAGES_PER_GRADE_FOR_A_CLASS}
    patients = len({image.patient_id for image in images})
    if len(images) < MIN_TRAINING_IMAGES or len(usable) < 2 or patients < 2:
        raise TrainingDataError(
            f"Not enough confirmed grades to train a model: {len(images)} confirmed gradable "
            f"image(s) from {patients} patient(s), grades {dict(sorted(counts.items())) or '{}'}. "
            f"Training needs at least {MIN_TRAINING_IMAGES} images, two patients and two grades "
            f"with {MIN_IMAGES_PER_GRADE_FOR_A_CLASS}+ images each."
        )
    return counts


# ---------------------------------------------------------------------------------------------
# Requests from the web process


TRAINING_MODES = {
    "head": "Fast: head on cached features (seconds)",
    "finetune": "Fine-tune backbone (hours on CPU, minutes on a GPU)",
}


def model_retrain_request(
    *,
    user: AbstractBaseUser | None,
    trigger: str = "manual",
    activate_if_first: bool = False,
    mode: str = "head",
) -> tuple[Job, bool]:
    """Queue a retrain (or return the one already open). ``mode``: ``"head"`` (a head on cached
    frozen features) or ``"finetune"`` (the backbone's top blocks too). Raises
    ``TrainingDataError`` when the confirmed grades cannot make a model, ``QueueUnavailable``
    when Redis is down."""
    if mode not in TRAINING_MODES:
        raise ValueError(f"unknown training mode {mode!r}; known: {', '.join(TRAINING_MODES)}")
    training_data_check()
    params: dict[str, Any] = {"trigger": trigger, "mode": mode}
    if activate_if_first:
        params["activate_if_first"] = True
    return job_enqueue(kind=Job.Kind.MODEL_TRAIN, params=params, created_by=user)


def model_auto_retrain_check() -> Job | None:
    """Queue a candidate retrain once ``auto_retrain_after`` images were confirmed since the last
    training was requested (0 turns this off). The result is never activated automatically."""
    workbench = WorkbenchSettings.objects.first()
    threshold = workbench.auto_retrain_after if workbench else 0
    if not threshold:
        return None
    last_training = Job.objects.filter(kind=Job.Kind.MODEL_TRAIN).order_by("-created_at").first()
    confirmed = Image.objects.filter(
        grading_state=Image.GradingState.CONFIRMED, confirmed_ungradable=False
    )
    if last_training is not None:
        confirmed = confirmed.filter(confirmed_at__gt=last_training.created_at)
    new_confirmed = confirmed.count()
    if new_confirmed < threshold:
        return None
    try:
        training_data_check()
    except TrainingDataError:
        return None
    job, created = job_enqueue(
        kind=Job.Kind.MODEL_TRAIN, params={"trigger": "automatic", "new_confirmed": new_confirmed}
    )
    return job if created else None


# ---------------------------------------------------------------------------------------------
# Activation and rollback


@dataclass
class Activation:
    version: ModelVersion
    previous: ModelVersion | None
    refresh_job: Job | None
    refresh_error: str = ""


def model_version_activate(
    *, version: ModelVersion, user: AbstractBaseUser | None = None, audit_note: str = "activation"
) -> Activation:
    """Make ``version`` the one that grades new images; the current active one is retired.

    One transaction: at no moment are there zero or two active versions. Then the predictions
    the version lacks (images uploaded since it was trained) are queued, best effort.
    """
    version.refresh_from_db()
    if version.state == ModelVersion.State.ACTIVE:
        raise ModelVersionError(f"{version.name} is already the active model.")
    if version.state not in (ModelVersion.State.CANDIDATE, ModelVersion.State.RETIRED):
        raise ModelVersionError(
            f"{version.name} is {version.get_state_display().lower()}; only a candidate or a "
            "retired version can be activated."
        )
    if not version.artifact_path or not Path(version.artifact_path).is_dir():
        raise ModelVersionError(
            f"The files of {version.name} are missing ({version.artifact_path or 'no folder'}); "
            "it cannot be activated."
        )
    try:
        with audit_actor(user), transaction.atomic():
            locked = (
                ModelVersion.objects.select_for_update()
                .filter(pk=version.pk, state=version.state)
                .first()
            )
            if locked is None:
                raise ModelVersionError(f"{version.name} changed meanwhile; reload the page.")
            previous = (
                ModelVersion.objects.select_for_update()
                .filter(state=ModelVersion.State.ACTIVE)
                .first()
            )
            # save() rather than update(): the audit trail records each state change, who made
            # it and whether it was a rollback.
            if previous is not None:
                previous.state = ModelVersion.State.RETIRED
                previous.audit_note = f"replaced by {version.name}"
                previous.save(update_fields=["state"])
            locked.state = ModelVersion.State.ACTIVE
            locked.activated_at = timezone.now()
            locked.activated_by = user
            locked.audit_note = audit_note
            locked.save(update_fields=["state", "activated_at", "activated_by"])
    except IntegrityError:
        raise ModelVersionError(
            "Another version was activated at the same moment; reload the page."
        ) from None
    version.refresh_from_db()
    if previous is not None:
        previous.refresh_from_db()
    logger.info(
        "Model %s activated by %s (was %s)", version.name, user or "setup", previous or "none"
    )
    activation = Activation(version=version, previous=previous, refresh_job=None)
    from grading.services.predictions import predictions_refresh_enqueue

    try:
        activation.refresh_job = predictions_refresh_enqueue(created_by=user)
    except QueueUnavailable as error:
        activation.refresh_error = str(error)
    return activation


def model_version_rollback(*, user: AbstractBaseUser | None = None) -> Activation:
    """Re-activate the version that was active before the current one."""
    from grading.selectors.model_versions import model_version_rollback_target

    target = model_version_rollback_target()
    if target is None:
        raise ModelVersionError("There is no previously active version to roll back to.")
    return model_version_activate(version=target, user=user, audit_note="rollback")


# ---------------------------------------------------------------------------------------------
# Training (worker side)


def model_version_next_name() -> str:
    numbers = [
        int(match.group(1))
        for name in ModelVersion.objects.values_list("name", flat=True)
        if (match := re.fullmatch(r"v(\d+)", name))
    ]
    return f"v{max(numbers, default=0) + 1}"


def model_train_job(*, job: Job, progress: Progress) -> dict[str, Any]:
    """The `model_train` task's work; see ``model_train``."""
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
        "message": (
            f"{version.name} trained and activated (first model)"
            if auto_activated
            else f"{version.name} trained; it is a candidate until an admin activates it"
        ),
    }


def scale_classes() -> tuple[tuple[int, ...], int]:
    """The grading scale's values and the first referable grade (from the GradeLevel table)."""
    levels = list(GradeLevel.objects.order_by("value"))
    classes = tuple(level.value for level in levels)
    referable = [level.value for level in levels if level.is_referable]
    return classes, min(referable) if referable else classes[-1]


def feature_config_for_training() -> FeatureConfig:
    from mlcore.features.config import FeatureConfig

    return FeatureConfig.from_env(backbones=tuple(settings.FUNDUS_BACKBONES))


def training_config_from_settings(
    *, classes: tuple[int, ...], referable_from: int
) -> TrainingConfig:
    from mlcore.data.augment import AugmentConfig
    from mlcore.pipelines.training import TrainingConfig

    head = {"epochs": settings.FUNDUS_TRAIN_EPOCHS} if settings.FUNDUS_TRAIN_EPOCHS else {}
    return TrainingConfig(
        classes=classes,
        referable_from=referable_from,
        # The released model learns from every confirmed image; its figures come from the
        # cross-validation of the `model_evaluate` job (``n_splits`` folds).
        holdout_fraction=0.0,
        n_splits=settings.FUNDUS_CV_FOLDS,
        augment=AugmentConfig(variants=settings.FUNDUS_AUGMENT_VARIANTS),
        # Augmented copies only pay off with test-time averaging over the same copies
        # (bench/README.md: 20 copies without it lowered 5-fold QWK from 0.833 to 0.824).
        tta=settings.FUNDUS_AUGMENT_VARIANTS > 0,
        head=head,
    )


def finetune_config_from_settings(*, classes: tuple[int, ...], seed: int = 2017) -> Any:
    from mlcore.models.finetune import FinetuneConfig

    blocks = settings.FUNDUS_FINETUNE_TOP_BLOCKS
    return FinetuneConfig(
        backbone=settings.FUNDUS_FINETUNE_BACKBONE,
        top_blocks=None if blocks == "all" else int(blocks),
        epochs=settings.FUNDUS_FINETUNE_EPOCHS,
        batch_size=settings.FUNDUS_FINETUNE_BATCH_SIZE,
        learning_rates=tuple(float(r) for r in settings.FUNDUS_FINETUNE_LEARNING_RATES),
        classes=classes,
        seed=seed,
    )


def finetune_checkpoint_dir(*, images: list[TrainingImage], config: Any) -> Path:
    """Where a fine-tuning run keeps its epoch checkpoints: named after its training data and
    settings, so that the retry of a killed job (a new job, same data) finds them and resumes,
    while a retrain on other data or settings starts afresh."""
    import hashlib
    import json

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
    images: list[TrainingImage],
    out_dir: Path,
    classes: tuple[int, ...],
    referable_from: int,
    preprocessing: str,
    progress: Progress,
) -> dict[str, Any]:
    """Fine-tune (``mlcore.models.finetune``) into ``out_dir``; the version's fields, as
    ``model_train`` writes them for a head."""
    from grading.services.features import weights_dir
    from mlcore.models.finetune import train_finetuned_model

    config = finetune_config_from_settings(classes=classes)
    checkpoints = finetune_checkpoint_dir(images=images, config=config)
    result = train_finetuned_model(
        [image.path for image in images],
        [image.grade for image in images],
        out_dir=out_dir,
        groups=[f"patient:{image.patient_id}" for image in images],
        config=config,
        holdout_fraction=settings.FUNDUS_FINETUNE_HOLDOUT_PERCENT / 100,
        preprocessing=preprocessing,
        referable_from=referable_from,
        checkpoint_dir=checkpoints,
        weights_dir=weights_dir(),
        progress=progress,
    )
    sha_by_path = {str(image.path): image.sha256 for image in images}
    fit = result.fit
    return {
        "result": result,
        "holdout_sha256": [sha_by_path[str(path)] for path in result.test_paths],
        "metrics": {
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
    from grading.services.features import feature_store_dir, weights_dir
    from mlcore.models.artifact import read_metadata
    from mlcore.pipelines.training import train_model

    images = training_images()
    training_data_check(images=images)
    classes, referable_from = scale_classes()
    mode = job.params.get("mode", "head")
    feature_config = feature_config_for_training()
    if mode == "finetune":
        from dataclasses import replace

        feature_config = replace(feature_config, backbones=(settings.FUNDUS_FINETUNE_BACKBONE,))
    training_config = training_config_from_settings(classes=classes, referable_from=referable_from)
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
    out_dir = _model_dir(version.name)
    try:
        if mode == "finetune":
            progress(1, f"Fine-tuning {version.name} on {len(images)} confirmed images")
            trained = _train_finetuned(
                images=images,
                out_dir=out_dir,
                classes=classes,
                referable_from=referable_from,
                preprocessing=feature_config.preprocessing,
                progress=progress_span(progress, 1, 80),
            )
            held_out = set(trained["holdout_sha256"])
            training_set_write(
                folder=out_dir, images=[i for i in images if i.sha256 not in held_out]
            )
            metadata = read_metadata(out_dir)
            ModelVersion.objects.filter(pk=version.pk).update(
                artifact_path=str(out_dir),
                train_counts={str(k): int(v) for k, v in metadata["training_counts"].items()},
                holdout_sha256=trained["holdout_sha256"],
                trained_at=timezone.now(),
                metrics=trained["metrics"],
            )
            # The k-fold evaluation re-trains heads on cached features: it would not measure a
            # fine-tuned network, so a fine-tuned version keeps its grouped hold-out figures.
            return _model_predict_all(version=version, progress=progress, job=None)
        progress(1, f"Training {version.name} on all {len(images)} confirmed images")
        result = train_model(
            [image.path for image in images],
            [image.grade for image in images],
            out_dir=out_dir,
            groups=[f"patient:{image.patient_id}" for image in images],
            feature_config=feature_config,
            training_config=training_config,
            store_dir=feature_store_dir(),
            weights_dir=weights_dir(),
            progress=progress_span(progress, 1, 80),
        )
        training_set_write(folder=out_dir, images=images)
        metadata = read_metadata(out_dir)
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
        return _model_predict_all(version=version, progress=progress, job=job)
    except BaseException:
        ModelVersion.objects.filter(pk=version.pk, state=ModelVersion.State.TRAINING).update(
            state=ModelVersion.State.FAILED
        )
        raise


def _model_predict_all(
    *, version: ModelVersion, progress: Progress, job: Job | None
) -> ModelVersion:
    """Predict every image with the freshly trained version, then make it a candidate (and,
    given its training ``job``, queue its cross-validation)."""
    from grading.services.predictions import images_predict

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


# ---------------------------------------------------------------------------------------------
# Evaluation (worker side): out-of-fold cross-validation with bootstrap intervals

# ``metrics["evaluation"]`` of a version: its figures are being computed, exist, or failed.
EVALUATION_PENDING = "pending"
EVALUATION_DONE = "done"
EVALUATION_FAILED = "failed"


def training_set_write(*, folder: Path, images: list[TrainingImage]) -> None:
    """``training_set.csv`` in the version's folder: sha256, grade and patient of every image the
    version was trained on (its predictions of them are flagged ``in_training``, and its
    cross-validation re-uses exactly this set)."""
    import csv

    from grading.selectors.model_versions import TRAINING_SET_FILE

    with (folder / TRAINING_SET_FILE).open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["sha256", "grade", "patient_id"])
        writer.writerows((image.sha256, image.grade, image.patient_id) for image in images)


def model_evaluate_enqueue(*, version: ModelVersion, user: AbstractBaseUser | None = None) -> None:
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
    over exactly its training set, on the cached features: pooled out-of-fold metrics with
    bootstrap 95 % intervals and ECE go into ``version.metrics["cv"]``; the out-of-fold
    predictions go into the version's folder for paired comparisons."""
    import numpy as np

    from grading.selectors.model_versions import OOF_FILE, model_version_training_set
    from grading.services.features import feature_store_dir, weights_dir
    from mlcore.evaluation.intervals import metric_intervals
    from mlcore.pipelines.predict import DomainSpec, domain_features
    from mlcore.pipelines.training import cross_validate_features

    try:
        rows = model_version_training_set(version=version)
        paths_by_sha = {
            sha: Path(settings.MEDIA_ROOT) / name
            for sha, name in Image.objects.filter(sha256__in=[r.sha256 for r in rows]).values_list(
                "sha256", "file"
            )
        }
        # An image deleted since training cannot be re-read; the figures say how many remain.
        rows = [row for row in rows if row.sha256 in paths_by_sha]
        training_config = training_config_from_settings(
            classes=tuple(version.class_values), referable_from=scale_classes()[1]
        )
        from mlcore.features.config import FeatureConfig

        feature_config = FeatureConfig.from_env(
            backbones=tuple(version.backbones), preprocessing=version.preprocessing
        )
        progress(2, f"{version.name}: features of {len(rows)} training images")
        features, variants, _, _, _ = domain_features(
            DomainSpec(
                feature_config=feature_config,
                training_domain=training_config.training_domain,
                raw_photo_preprocessing=training_config.raw_photo_preprocessing,
                tta_augment=(training_config.augment, training_config.seed)
                if training_config.augment.variants
                else None,
            ),
            [paths_by_sha[row.sha256] for row in rows],
            store_dir=feature_store_dir(),
            weights_dir=weights_dir(),
        )
        y = np.asarray([row.grade for row in rows])
        groups = [f"patient:{row.patient_id}" for row in rows]
        cv = cross_validate_features(
            features,
            y,
            groups,
            config=training_config,
            X_variants=variants,
            progress=progress_span(progress, 5, 85),
        )
        progress(85, f"{version.name}: bootstrap intervals")
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
            Path(version.artifact_path) / OOF_FILE,
            sha256=np.asarray([row.sha256 for row in rows]),
            grade=y,
            predicted=cv.oof_pred,
            probabilities=cv.oof_proba,
        )
        from mlcore.evaluation.reports import plot_confusion

        plot_confusion(
            cv.pooled["confusion"],
            Path(version.artifact_path) / "confusion.png",
            classes=classes,
            labels={level.value: level.name for level in GradeLevel.objects.all()},
            title=f"{training_config.n_splits}-fold CV, out-of-fold ({y.size} images)",
        )
        figures = {
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


def _model_dir(name: str) -> Path:
    return Path(settings.FUNDUS_MODEL_DIR) / name
