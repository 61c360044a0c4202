"""mlcore's configuration objects, built from Django settings (``FUNDUS_*``).

The one place where grading turns its settings into mlcore's dataclasses: the feature store and
weights folders, the feature configuration (backbones, preprocessing, storage dtype, batch size),
the grading scale's classes, the head's training recipe and the fine-tuning recipe. mlcore can
read the same variables from ``os.environ`` itself; reading them through settings instead lets
``override_settings`` reach them.

A leaf: it imports settings, the grading scale's table and mlcore's configuration modules only,
never another service, so every service that needs a configuration can import it. mlcore is
imported inside the functions: mlcore.models.finetune imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from grading.models import GradeLevel

if TYPE_CHECKING:
    from mlcore.features.config import FeatureConfig
    from mlcore.models.finetune import FinetuneConfig
    from mlcore.pipelines.training import TrainingConfig


def scale_classes() -> tuple[tuple[int, ...], int]:
    """The grading scale's values and the first referable grade (from the GradeLevel table)."""
    levels = list(GradeLevel.objects.order_by("value"))
    classes = tuple(level.value for level in levels)
    referable = [level.value for level in levels if level.is_referable]
    return classes, min(referable) if referable else classes[-1]


def feature_store_dir() -> Path:
    return Path(settings.FUNDUS_FEATURE_STORE)


def weights_dir() -> Path | None:
    """The offline backbone weights folder, or None where it does not exist."""
    path = Path(settings.FUNDUS_WEIGHTS_DIR)
    return path if path.is_dir() else None


def feature_config(
    *, backbones: Sequence[str] | None = None, preprocessing: str | None = None
) -> FeatureConfig:
    """The configured features (``FUNDUS_BACKBONES``, ``FUNDUS_PREPROCESSING``,
    ``FUNDUS_FEATURE_DTYPE``, ``FUNDUS_FEATURE_BATCH_SIZE``); ``backbones`` and
    ``preprocessing`` (a model version's own) override the first two."""
    from mlcore.features.config import FeatureConfig

    return FeatureConfig(
        backbones=tuple(settings.FUNDUS_BACKBONES if backbones is None else backbones),
        preprocessing=settings.FUNDUS_PREPROCESSING if preprocessing is None else preprocessing,
        dtype=settings.FUNDUS_FEATURE_DTYPE,
        batch_size=settings.FUNDUS_FEATURE_BATCH_SIZE,
    )


def training_config_from_settings(
    *, classes: tuple[int, ...], referable_from: int
) -> TrainingConfig:
    """The head's training recipe for a grading scale (``FUNDUS_TRAIN_EPOCHS``,
    ``FUNDUS_CV_FOLDS``, ``FUNDUS_AUGMENT_VARIANTS``)."""
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


def training_config_of_version(
    *, artifact_path: str, classes: tuple[int, ...], referable_from: int
) -> tuple[TrainingConfig, str]:
    """(the head recipe a version was trained with, where it came from): its head parameters,
    augmentation, test-time averaging and seed as its ``metadata.json`` records them, so that
    re-scoring a version re-runs *its* recipe and not today's settings. Only the number of
    folds (how it is scored) comes from the settings. Falls back to today's settings, and says
    so, for a folder without readable metadata."""
    from dataclasses import fields

    from mlcore.data.augment import AugmentConfig
    from mlcore.models.artifact import ArtifactError, read_metadata
    from mlcore.pipelines.training import TrainingConfig

    try:
        meta = read_metadata(artifact_path)
    except ArtifactError:
        fallback = training_config_from_settings(classes=classes, referable_from=referable_from)
        return fallback, "today's settings (the version's metadata is missing)"
    params = dict(meta["head"]["params"])
    for decided_by_caller in ("classes", "seed", "verbose"):
        params.pop(decided_by_caller, None)
    recorded = dict(meta.get("augmentation") or {})
    names = {f.name for f in fields(AugmentConfig)}
    augment = AugmentConfig(**{k: v for k, v in recorded.items() if k in names})
    config = TrainingConfig(
        classes=classes,
        referable_from=referable_from,
        seed=int(meta.get("seed", 2017)),
        holdout_fraction=0.0,
        n_splits=settings.FUNDUS_CV_FOLDS,
        augment=augment,
        tta=bool(recorded.get("tta")) and augment.variants > 0,
        head=params,
    )
    return config, "the version's metadata"


def finetune_config_from_settings(*, classes: tuple[int, ...], seed: int = 2017) -> FinetuneConfig:
    """The fine-tuning recipe (``FUNDUS_FINETUNE_*``) for a grading scale."""
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
