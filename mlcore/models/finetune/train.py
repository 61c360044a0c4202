"""Fine-tune on graded images and save the model folder (the CLI's and the Celery task's
``train --mode finetune``): :func:`train_finetuned_model`, the fine-tuned counterpart of
:func:`mlcore.pipelines.training.train_model`, on the same hold-out skeleton
(:mod:`mlcore.models.holdout`); :func:`save_finetuned_artifact`, its training record in the
model folder (:mod:`mlcore.models.artifact` writes it)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcore.data.domain import DOMAIN_FILTERED, RAW_TO_FILTERED, ImageDomain
from mlcore.data.splits import merge_groups
from mlcore.evaluation.metrics import REFERABLE_FROM
from mlcore.models.artifact import TrainingRecord, save_finetuned_model
from mlcore.models.finetune.config import FinetuneConfig, Progress
from mlcore.models.finetune.fit import FinetuneResult, finetune_fit
from mlcore.models.holdout import HoldoutPlan, Rows, train_with_holdout


def save_finetuned_artifact(
    out_dir: str | Path,
    result: FinetuneResult,
    *,
    config: FinetuneConfig,
    preprocessing: str,
    training_counts: Mapping[int, int],
    training_domain: str,
    raw_photo_preprocessing: str | None,
    referable_from: int,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model folder holding the whole network (``network.keras``) and the same
    metadata as a head model, with ``kind: "finetuned"``."""
    return save_finetuned_model(
        out_dir,
        result.model,
        preprocessing=preprocessing,
        training=TrainingRecord(
            training_counts=training_counts,
            training_domain=training_domain,
            raw_photo_preprocessing=raw_photo_preprocessing,
            referable_from=referable_from,
            metrics=metrics,
            extra=extra,
        ),
        fit_record={
            "calibration": result.calibration,
            "n_epochs": config.epochs,
            "best_epoch": result.chosen.best_epoch,
            "fit_seconds": result.train_seconds,
            "history": {
                key: [row[key] for row in result.chosen.history]
                for key in ("loss", "val_loss", "val_accuracy", "val_qwk")
            },
        },
        finetune=_finetune_record(result, config),
    )


def _finetune_record(result: FinetuneResult, config: FinetuneConfig) -> dict[str, Any]:
    """The metadata's ``finetune`` section: the configuration and the learning-rate search."""
    return {
        "config": config.as_dict(),
        "cut_layer": result.model.info_.get("cut_layer"),
        "chosen_learning_rate": result.chosen.learning_rate,
        "candidates": [
            {
                "learning_rate": c.learning_rate,
                "best_epoch": c.best_epoch,
                "best_val_loss": c.best_val_loss,
                "images_per_second": c.images_per_second,
            }
            for c in result.candidates
        ],
        "n_train": result.n_train,
        "n_validation": result.n_validation,
        "cache_seconds": result.cache_seconds,
        "train_seconds": result.train_seconds,
    }


@dataclass
class FinetuneTrainResult:
    """What :func:`train_finetuned_model` produced (hold-out metrics when a hold-out was kept)."""

    artifact_dir: Path
    metrics: dict[str, Any] | None
    fit: FinetuneResult
    n_train: int
    n_test: int
    train_paths: list[Path]
    test_paths: list[Path]
    # How each image reached the network (``ImageDomain.load``), as prediction brings it there.
    train_preprocessing: list[str]
    test_preprocessing: list[str]
    holdout_proba: npt.NDArray[np.float64] | None


@dataclass
class _Domain:
    """The training images' domain as the model folder records it."""

    preprocessing: str
    training_domain: str
    raw_photo_preprocessing: str | None
    referable_from: int

    @property
    def images(self) -> ImageDomain:
        return ImageDomain(
            training_domain=self.training_domain,
            preprocessing=self.preprocessing,
            raw_photo_preprocessing=self.raw_photo_preprocessing,
        )


@dataclass
class _FinetuneSteps:
    """The fine-tuned network's steps of the hold-out skeleton."""

    paths: list[Path]
    y: npt.NDArray[np.int64]
    groups: npt.NDArray[Any]
    config: FinetuneConfig
    domain: _Domain
    out: Path
    checkpoint: Path
    weights: str | Path | None
    weights_dir: str | Path | None
    progress: Progress
    train_preprocessing: list[str] = field(default_factory=list)
    test_preprocessing: list[str] = field(default_factory=list)
    holdout_proba: npt.NDArray[np.float64] | None = None

    def fit(self, train_idx: Rows, test_idx: Rows) -> FinetuneResult:
        from mlcore.features.backbones import get_backbone

        def fit_progress(percent: int, message: str) -> None:
            self.progress(int(percent * 0.9), message)

        paths = [self.paths[i] for i in train_idx]
        self.progress(1, "decoding images")
        images, self.train_preprocessing = self.domain.images.load(
            paths, size=get_backbone(self.config.backbone).input_size
        )
        return finetune_fit(
            paths,
            self.y[train_idx],
            groups=[self.groups[i] for i in train_idx],
            config=self.config,
            checkpoint_dir=self.checkpoint,
            images=images,
            weights=self.weights,
            weights_dir=self.weights_dir,
            progress=fit_progress,
        )

    def holdout_predictions(
        self, fitted: FinetuneResult, test_idx: Rows
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        images, self.test_preprocessing = self.domain.images.load(
            [self.paths[i] for i in test_idx], size=fitted.model.input_size
        )
        proba = fitted.model.predict_proba(images)
        self.holdout_proba = proba
        return proba, fitted.model.decode(proba)

    def save(
        self,
        fitted: FinetuneResult,
        *,
        training_counts: Mapping[int, int],
        metrics: Mapping[str, Any] | None,
        extra: Mapping[str, Any],
    ) -> Path:
        return save_finetuned_artifact(
            self.out,
            fitted,
            config=self.config,
            preprocessing=self.domain.preprocessing,
            training_counts=training_counts,
            training_domain=self.domain.training_domain,
            raw_photo_preprocessing=self.domain.raw_photo_preprocessing,
            referable_from=self.domain.referable_from,
            metrics=metrics,
            extra=extra,
        )

    def finish(self, fitted: FinetuneResult, out: Path) -> None:
        shutil.rmtree(self.checkpoint, ignore_errors=True)


def _checked_images(
    paths: Sequence[str | Path], grades: Sequence[int]
) -> tuple[list[Path], npt.NDArray[np.int64]]:
    image_paths = [Path(p) for p in paths]
    missing = [str(p) for p in image_paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) not found, e.g. {missing[:3]}")
    y = np.asarray(grades, dtype=np.int64)
    if y.size != len(image_paths):
        raise ValueError(f"{len(image_paths)} images but {y.size} grades")
    return image_paths, y


def train_finetuned_model(
    paths: Sequence[str | Path],
    grades: Sequence[int],
    *,
    out_dir: str | Path,
    groups: Sequence[object] | None = None,
    config: FinetuneConfig | None = None,
    holdout_fraction: float = 0.1,
    preprocessing: str = "none",
    training_domain: str | None = None,
    raw_photo_preprocessing: str | None = None,
    referable_from: int | None = None,
    checkpoint_dir: str | Path | None = None,
    weights: str | Path | None = "imagenet",
    weights_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> FinetuneTrainResult:
    """Fine-tune on graded images and save the model folder ``out_dir``: grouped hold-out of
    ``holdout_fraction`` of the patients for the reported metrics (0: train on all),
    :func:`~mlcore.models.finetune.finetune_fit` on the rest, calibrated metrics on the
    hold-out. ``checkpoint_dir`` (default ``<out_dir>.checkpoints``) keeps every completed
    epoch; it is removed once the model folder is written."""
    config = config or FinetuneConfig()
    out = Path(out_dir)
    domain = training_domain or DOMAIN_FILTERED
    if raw_photo_preprocessing is None and domain == DOMAIN_FILTERED:
        raw_photo_preprocessing = RAW_TO_FILTERED
    image_paths, y = _checked_images(paths, grades)
    merged = merge_groups(list(groups) if groups is not None else [None] * len(image_paths))
    steps = _FinetuneSteps(
        paths=image_paths,
        y=y,
        groups=merged,
        config=config,
        domain=_Domain(
            preprocessing=preprocessing,
            training_domain=domain,
            raw_photo_preprocessing=raw_photo_preprocessing if domain == DOMAIN_FILTERED else None,
            referable_from=REFERABLE_FROM if referable_from is None else referable_from,
        ),
        out=out,
        checkpoint=Path(checkpoint_dir)
        if checkpoint_dir
        else out.with_name(f"{out.name}.checkpoints"),
        weights=weights,
        weights_dir=weights_dir,
        progress=progress or (lambda percent, message: None),
    )
    run = train_with_holdout(
        steps,
        y,
        merged,
        plan=HoldoutPlan(
            classes=tuple(config.classes),
            referable_from=steps.domain.referable_from,
            holdout_fraction=holdout_fraction,
            seed=config.seed,
            labels=None,
            evaluate_percent=91,
            save_percent=97,
        ),
        progress=steps.progress,
    )
    return FinetuneTrainResult(
        artifact_dir=run.out,
        metrics=run.metrics,
        fit=run.fitted,
        n_train=int(run.train_idx.size),
        n_test=int(run.test_idx.size),
        train_paths=[image_paths[i] for i in run.train_idx],
        test_paths=[image_paths[i] for i in run.test_idx],
        train_preprocessing=steps.train_preprocessing,
        test_preprocessing=steps.test_preprocessing,
        holdout_proba=steps.holdout_proba,
    )
