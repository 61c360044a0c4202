"""Training and evaluation entry points shared by the CLI and the Celery tasks.

- :func:`train_model`: features (from the store, computed if missing) -> grouped stratified
  hold-out split -> augmented variants of the *training* images only -> head -> metrics on the
  hold-out -> model folder (:mod:`mlcore.models.artifact`) with report JSON and PNG plots, on
  the hold-out skeleton it shares with the fine-tuned model (:mod:`mlcore.models.holdout`).
- :func:`evaluate_cv`: k-fold cross-validation grouped by patient, the same steps per fold.
- :func:`cross_validate_features` / :func:`fit_head`: the same on feature arrays already in
  memory (benchmarks, tests).

Both report progress through ``progress(percent: int, message: str)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcore.data.augment import AugmentConfig
from mlcore.data.domain import DOMAIN_FILTERED, DOMAINS, RAW_TO_FILTERED, is_known
from mlcore.data.splits import (
    DEFAULT_SEED,
    grouped_kfold,
    merge_groups,
)
from mlcore.evaluation.metrics import (
    ICDR_GRADES,
    ICDR_LABELS,
    REFERABLE_FROM,
    metrics_report,
    summarize,
)
from mlcore.evaluation.reports import plot_confusion, plot_history, write_json
from mlcore.features.config import FeatureConfig, default_store_dir, default_weights_dir
from mlcore.models.artifact import save_artifact
from mlcore.models.classifier import HeadClassifier, predict_with_tta
from mlcore.models.holdout import HoldoutPlan, Progress, Rows, train_with_holdout
from mlcore.models.ood import ood_fit_save
from mlcore.pipelines.domain_features import (
    Copies,
    DomainSpec,
    Features,
    augment_store_dir,
    domain_features,
    source_features,
    variant_features,
)
from mlcore.pipelines.labels import LabeledImages, LabelsError, check_inputs, read_labels_csv

# The web app, the CLI and the benchmarks import these feature helpers from here, beside training.
__all__ = [
    "CVResult",
    "LabeledImages",
    "LabelsError",
    "TrainResult",
    "TrainingConfig",
    "augment_store_dir",
    "cross_validate_features",
    "evaluate_cv",
    "fit_head",
    "predict_with_tta",
    "read_labels_csv",
    "source_features",
    "train_model",
    "variant_features",
]


def _no_progress(percent: int, message: str) -> None:
    return None


@dataclass(frozen=True)
class TrainingConfig:
    """How to train and evaluate a head (features are configured by ``FeatureConfig``).

    - ``holdout_fraction``: share of groups held out for the metrics of ``train_model``; 0 trains
      on everything (no metrics).
    - ``augment``: augmentation ranges and ``augment.variants`` copies per *training* image.
    - ``tta``: also average the predicted probabilities over the augmented copies of each test
      image (test-time augmentation; needs ``augment.variants`` > 0, costs their extraction).
    - ``head``: keyword overrides for :class:`~mlcore.models.classifier.HeadClassifier`.
    - ``training_domain``: ``"gaussian_filtered"`` for the shared APTOS set (already Ben-Graham
      filtered, so ``FeatureConfig.preprocessing`` stays "none"); raw photographs are then mapped
      into that domain at prediction time with ``raw_photo_preprocessing`` (default
      :func:`mlcore.data.domain.filter_like_training`).
    """

    classes: tuple[int, ...] = ICDR_GRADES
    referable_from: int = REFERABLE_FROM
    seed: int = DEFAULT_SEED
    holdout_fraction: float = 0.1
    n_splits: int = 5
    augment: AugmentConfig = AugmentConfig()
    tta: bool = False
    head: Mapping[str, Any] = field(default_factory=dict)
    training_domain: str = DOMAIN_FILTERED
    raw_photo_preprocessing: str | None = RAW_TO_FILTERED

    def __post_init__(self) -> None:
        if self.raw_photo_preprocessing is not None and not is_known(self.raw_photo_preprocessing):
            raise ValueError(f"unknown raw_photo_preprocessing {self.raw_photo_preprocessing!r}")
        if self.training_domain not in DOMAINS:
            raise ValueError(f"training_domain must be one of {DOMAINS}")
        if not 0.0 <= self.holdout_fraction < 0.5:
            raise ValueError("holdout_fraction must be in [0, 0.5)")
        if self.n_splits < 2:
            raise ValueError("n_splits must be >= 2")
        if self.tta and self.augment.variants < 1:
            raise ValueError("tta needs augment.variants >= 1")
        unknown = set(self.head) - set(HeadClassifier().get_params())
        if unknown:
            raise ValueError(f"unknown head parameters {sorted(unknown)}")

    def make_classifier(self) -> HeadClassifier:
        params = {"classes": self.classes, "seed": self.seed, **dict(self.head)}
        return HeadClassifier(**params)


# -- features -----------------------------------------------------------------------------------
def _sub_progress(
    progress: Progress, start: int, stop: int, message: str
) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        progress(int(start + (stop - start) * fraction), f"{message} {done}/{total}")

    return report


# -- heads on feature arrays ----------------------------------------------------------------------
def fit_head(
    classifier: HeadClassifier,
    X: Features,
    y: npt.NDArray[np.int64],
    groups: npt.NDArray[Any],
    X_variants: npt.NDArray[np.floating[Any]] | None = None,
    epoch_callback: Callable[[int, dict[str, float]], None] | None = None,
) -> HeadClassifier:
    """Fit on original rows plus their augmented copies (each copy carries its source's group,
    so the head's inner validation split keeps copies with their source)."""
    rows, labels, row_groups, variant = [X], [y], [groups], [np.zeros(y.size, np.int64)]
    if X_variants is not None and X_variants.shape[1]:
        n_variants = X_variants.shape[1]
        rows.append(X_variants.reshape(-1, X.shape[1]))
        labels.append(np.repeat(y, n_variants))
        row_groups.append(np.repeat(groups, n_variants))
        variant.append(np.tile(np.arange(1, n_variants + 1), y.size))
    return classifier.fit(
        np.concatenate(rows),
        np.concatenate(labels),
        groups=np.concatenate(row_groups),
        variant=np.concatenate(variant),
        epoch_callback=epoch_callback,
    )


@dataclass
class CVResult:
    """k-fold results: per-fold reports, mean/spread summary, report on pooled out-of-fold
    predictions, the out-of-fold probabilities and grades, head training seconds per fold."""

    folds: list[dict[str, Any]]
    summary: dict[str, Any]
    pooled: dict[str, Any]
    oof_proba: npt.NDArray[np.float64]
    oof_pred: npt.NDArray[np.int64]
    fit_seconds: list[float]
    decodings: list[str]
    histories: list[dict[str, list[float]]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "pooled": self.pooled,
            "folds": self.folds,
            "fit_seconds": self.fit_seconds,
            "decodings": self.decodings,
        }


def cross_validate_features(
    X: Features,
    y: npt.ArrayLike,
    groups: Sequence[object] | npt.NDArray[Any] | None,
    *,
    config: TrainingConfig = TrainingConfig(),
    X_variants: npt.NDArray[np.floating[Any]] | None = None,
    folds: Sequence[tuple[Rows, Rows]] | None = None,
    progress: Progress = _no_progress,
) -> CVResult:
    """Grouped, stratified k-fold CV of the head on features in memory.

    ``X_variants`` (n, v, d): augmented copies; only those of the training folds are trained on
    (and, with ``config.tta``, those of the test fold are averaged into its predictions).
    """
    y = np.asarray(y, dtype=np.int64)
    merged = merge_groups(groups) if groups is not None else np.arange(y.size)
    if folds is None:
        folds = grouped_kfold(y, merged, n_splits=config.n_splits, seed=config.seed)
    k = len(config.classes)
    oof_proba = np.zeros((y.size, k))
    oof_pred = np.zeros(y.size, np.int64)
    reports, seconds, decodings, histories = [], [], [], []
    for number, (train_idx, test_idx) in enumerate(folds, start=1):
        progress(int(100 * (number - 1) / len(folds)), f"fold {number}/{len(folds)}")
        if np.intersect1d(merged[train_idx], merged[test_idx]).size:
            raise AssertionError("a group is on both sides of a fold")
        classifier = config.make_classifier()
        train_variants = None if X_variants is None else X_variants[train_idx]
        fit_head(classifier, X[train_idx], y[train_idx], merged[train_idx], train_variants)
        test_variants = X_variants[test_idx] if (config.tta and X_variants is not None) else None
        proba = predict_with_tta(classifier, X[test_idx], test_variants)
        pred = classifier.decode(proba)
        oof_proba[test_idx], oof_pred[test_idx] = proba, pred
        reports.append(
            metrics_report(
                y[test_idx],
                pred,
                proba,
                classes=config.classes,
                referable_from=config.referable_from,
            )
        )
        seconds.append(classifier.fit_seconds_)
        decodings.append(classifier.decoding_)
        histories.append(classifier.history_)
    covered = np.zeros(y.size, dtype=np.bool_)
    for _, test_idx in folds:
        covered[test_idx] = True
    pooled = metrics_report(
        y[covered],
        oof_pred[covered],
        oof_proba[covered],
        classes=config.classes,
        referable_from=config.referable_from,
    )
    progress(100, "cross-validation done")
    return CVResult(
        folds=reports,
        summary=summarize(reports),
        pooled=pooled,
        oof_proba=oof_proba,
        oof_pred=oof_pred,
        fit_seconds=seconds,
        decodings=decodings,
        histories=histories,
    )


def _labels(classes: Sequence[int]) -> dict[int, str] | None:
    return dict(ICDR_LABELS) if tuple(classes) == ICDR_GRADES else None


# -- entry points -------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What ``train_model`` produced; ``train_keys``/``test_keys``: feature keys (sha256) of the
    source images on each side of the hold-out split."""

    artifact_dir: Path
    metrics: dict[str, Any] | None
    classifier: HeadClassifier
    n_train: int
    n_test: int
    n_variants: int
    extraction_seconds: float
    fit_seconds: float
    train_keys: list[str] = field(default_factory=list)
    test_keys: list[str] = field(default_factory=list)


def _resolve_dirs(
    store_dir: str | Path | None, weights_dir: str | Path | None
) -> tuple[Path, Path | None]:
    store = Path(store_dir) if store_dir is not None else default_store_dir()
    weights = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    return store, weights


def _domain_spec(
    config: TrainingConfig, feature_config: FeatureConfig, *, with_variants: bool = False
) -> DomainSpec:
    return DomainSpec(
        feature_config=feature_config,
        training_domain=config.training_domain,
        raw_photo_preprocessing=config.raw_photo_preprocessing,
        tta_augment=(config.augment, config.seed) if with_variants else None,
    )


def _domain_variants(
    paths: Sequence[Path],
    config: TrainingConfig,
    feature_config: FeatureConfig,
    store: Path,
    weights: Path | None,
    progress: Callable[[int, int], None] | None,
) -> Copies:
    """Augmented copies (n, variants, d) of ``paths``, each image in the training domain."""
    _, variants, _, _, _ = domain_features(
        _domain_spec(config, feature_config, with_variants=True),
        paths,
        store_dir=store,
        weights_dir=weights,
        progress=progress,
    )
    assert variants is not None, "a spec with tta_augment gives augmented copies"
    return variants


@dataclass
class _SourceDataset:
    """Checked training images, their features (in the training domain) and merged groups."""

    paths: list[Path]
    y: npt.NDArray[np.int64]
    keys: list[str]
    X: npt.NDArray[np.float32]
    groups: npt.NDArray[Any]


def _source_dataset(
    paths: Sequence[str | Path],
    grades: Sequence[int],
    groups: Sequence[object] | None,
    *,
    config: TrainingConfig,
    feature_config: FeatureConfig,
    store: Path,
    weights: Path | None,
    progress: Progress,
) -> _SourceDataset:
    """Checked inputs, the source images' features (first 40 % of progress) and merged groups
    (identical files share a group, so they never sit on both sides of a split)."""
    checked, y = check_inputs(paths, grades, groups, config.classes)
    progress(0, f"features of {len(checked)} images")
    # The same domain mapping as prediction: a raw photograph among the training images reaches
    # the head through ``raw_photo_preprocessing``, exactly as it will when it is predicted.
    X, _, keys, _, _ = domain_features(
        _domain_spec(config, feature_config),
        checked,
        store_dir=store,
        weights_dir=weights,
        progress=_sub_progress(progress, 0, 40, "features"),
    )
    shas = [k.split("#")[0] for k in keys]
    merged = merge_groups(list(groups) if groups is not None else [None] * len(checked), shas)
    return _SourceDataset(paths=checked, y=y, keys=keys, X=X, groups=merged)


@dataclass
class _HeadSteps:
    """The head's steps of the hold-out skeleton: augmented copies, then the head."""

    data: _SourceDataset
    config: TrainingConfig
    feature_config: FeatureConfig
    store: Path
    weights: Path | None
    out_dir: str | Path
    progress: Progress
    started: float
    extraction_seconds: float = 0.0
    test_variants: Copies | None = None
    train_rows: Rows | None = None

    def fit(self, train_idx: Rows, test_idx: Rows) -> HeadClassifier:
        config, data = self.config, self.data
        self.train_rows = train_idx
        train_variants = None
        if config.augment.variants:
            needed = np.concatenate([train_idx, test_idx]) if config.tta else train_idx
            all_variants = _domain_variants(
                [data.paths[i] for i in needed],
                config,
                self.feature_config,
                self.store,
                self.weights,
                _sub_progress(self.progress, 40, 70, "augmented copies"),
            )
            train_variants = all_variants[: train_idx.size]
            if config.tta:
                self.test_variants = all_variants[train_idx.size :]
        self.extraction_seconds = time.perf_counter() - self.started

        classifier = config.make_classifier()
        max_epochs = classifier.epochs

        def on_epoch(epoch: int, logs: dict[str, float]) -> None:
            loss = logs.get("val_loss", logs.get("loss", float("nan")))
            self.progress(
                70 + int(20 * (epoch + 1) / max_epochs), f"epoch {epoch + 1}: loss {loss:.3f}"
            )

        self.progress(70, "training the head")
        return fit_head(
            classifier,
            data.X[train_idx],
            data.y[train_idx],
            data.groups[train_idx],
            train_variants,
            on_epoch,
        )

    def holdout_predictions(
        self, fitted: HeadClassifier, test_idx: Rows
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        proba = predict_with_tta(fitted, self.data.X[test_idx], self.test_variants)
        return proba, fitted.decode(proba)

    def save(
        self,
        fitted: HeadClassifier,
        *,
        training_counts: Mapping[int, int],
        metrics: Mapping[str, Any] | None,
        extra: Mapping[str, Any],
    ) -> Path:
        config = self.config
        return save_artifact(
            self.out_dir,
            fitted,
            feature_config=self.feature_config,
            training_counts=training_counts,
            training_domain=config.training_domain,
            raw_photo_preprocessing=config.raw_photo_preprocessing,
            referable_from=config.referable_from,
            metrics=metrics,
            augmentation={**asdict(config.augment), "tta": config.tta, "seed": config.seed},
            extra=extra,
        )

    def finish(self, fitted: HeadClassifier, out: Path) -> None:
        plot_history(fitted.history_, out / "curves.png", best_epoch=fitted.best_epoch_)
        if self.train_rows is not None:  # the out-of-distribution distance, beside the head
            ood_fit_save(out, self.data.X, self.data.y, self.data.groups, rows=self.train_rows)


def train_model(
    paths: Sequence[str | Path],
    grades: Sequence[int],
    *,
    out_dir: str | Path,
    groups: Sequence[object] | None = None,
    feature_config: FeatureConfig | None = None,
    training_config: TrainingConfig | None = None,
    store_dir: str | Path | None = None,
    weights_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a head on graded images and save the model folder ``out_dir``.

    ``groups``: patient (or any grouping) per image; images of one group, identical files and
    all augmented copies of an image stay on one side of the hold-out split. Metrics on the
    hold-out go into ``metadata.json`` and ``report.json`` (with ``confusion.png`` and
    ``curves.png``) inside the model folder.
    """
    feature_config = feature_config or FeatureConfig.from_env()
    config = training_config or TrainingConfig()
    progress = progress or _no_progress
    store, weights = _resolve_dirs(store_dir, weights_dir)
    started = time.perf_counter()
    data = _source_dataset(
        paths,
        grades,
        groups,
        config=config,
        feature_config=feature_config,
        store=store,
        weights=weights,
        progress=progress,
    )
    steps = _HeadSteps(
        data=data,
        config=config,
        feature_config=feature_config,
        store=store,
        weights=weights,
        out_dir=out_dir,
        progress=progress,
        started=started,
    )
    run = train_with_holdout(
        steps,
        data.y,
        data.groups,
        plan=HoldoutPlan(
            classes=tuple(config.classes),
            referable_from=config.referable_from,
            holdout_fraction=config.holdout_fraction,
            seed=config.seed,
            labels=_labels(config.classes),
            evaluate_percent=90,
            save_percent=95,
        ),
        progress=progress,
    )
    return TrainResult(
        artifact_dir=run.out,
        metrics=run.metrics,
        classifier=run.fitted,
        n_train=int(run.train_idx.size),
        n_test=int(run.test_idx.size),
        n_variants=config.augment.variants,
        extraction_seconds=steps.extraction_seconds,
        fit_seconds=run.fitted.fit_seconds_,
        train_keys=[data.keys[i] for i in run.train_idx],
        test_keys=[data.keys[i] for i in run.test_idx],
    )


def evaluate_cv(
    paths: Sequence[str | Path],
    grades: Sequence[int],
    *,
    groups: Sequence[object] | None = None,
    feature_config: FeatureConfig | None = None,
    training_config: TrainingConfig | None = None,
    store_dir: str | Path | None = None,
    weights_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> CVResult:
    """k-fold cross-validation (grouped by patient, stratified by grade) of the whole recipe.

    With ``out_dir``: ``report.json`` (summary, pooled and per-fold metrics), ``confusion.png``
    (pooled out-of-fold) and ``curves.png`` (first fold).
    """
    feature_config = feature_config or FeatureConfig.from_env()
    config = training_config or TrainingConfig()
    progress = progress or _no_progress
    store, weights = _resolve_dirs(store_dir, weights_dir)
    data = _source_dataset(
        paths,
        grades,
        groups,
        config=config,
        feature_config=feature_config,
        store=store,
        weights=weights,
        progress=progress,
    )
    paths, y, X, merged = data.paths, data.y, data.X, data.groups
    X_variants = None
    if config.augment.variants:
        # Every image is in some training fold, so every image needs its copies.
        X_variants = _domain_variants(
            paths,
            config,
            feature_config,
            store,
            weights,
            _sub_progress(progress, 40, 70, "augmented copies"),
        )

    def cv_progress(percent: int, message: str) -> None:
        progress(70 + int(0.3 * percent), message)

    result = cross_validate_features(
        X, y, merged, config=config, X_variants=X_variants, progress=cv_progress
    )
    if out_dir is not None:
        out = Path(out_dir)
        write_json(
            {
                **result.as_dict(),
                "backbones": list(feature_config.backbones),
                "preprocessing": feature_config.preprocessing,
                "n_images": int(y.size),
                "n_splits": config.n_splits,
                "augmentation": {**asdict(config.augment), "tta": config.tta},
            },
            out / "report.json",
        )
        plot_confusion(
            result.pooled["confusion"],
            out / "confusion.png",
            classes=config.classes,
            labels=_labels(config.classes),
            title=f"{config.n_splits}-fold CV, pooled out-of-fold",
        )
        if result.histories and result.histories[0].get("loss"):
            plot_history(result.histories[0], out / "curves.png", title="Fold 1 training curves")
    return result
