"""The recipe's classifier head on frozen backbone features, as a scikit-learn-like estimator.

concatenated features -> standardisation (fitted on the training split only) -> Dropout(0.5)
-> Dense(n_grades, softmax), adadelta, batch 64, categorical cross-entropy, seed 2017.

Added on top of the recipe: class weights for the imbalanced grades, early stopping on the
validation loss with the best weights restored, temperature scaling of the probabilities
(:mod:`mlcore.models.calibration`, fitted on the inner validation split; ``predict_proba`` returns the
calibrated probabilities) and ordinal decoding (grade = thresholds on the expected grade of the
calibrated probabilities, as the APTOS 2019 leaders did) kept only when it beats argmax on
held-out data.

The validation data for early stopping and thresholds is carved out of the data given to ``fit``
(grouped and stratified, variants never on the validation side), so an outer test fold is never
looked at.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcore.data.splits import DEFAULT_SEED, grouped_holdout
from mlcore.evaluation.metrics import ICDR_GRADES, expected_calibration_error
from mlcore.models.calibration import (
    DECODINGS,
    Decoding,
    Floats,
    apply_temperature,
    choose_decoding,
    decode_ordinal,
    expected_position,
    fit_ordinal_thresholds,
    fit_temperature,
    logits_from_proba,
)

# The decoding helpers are re-exported for callers that decode a head's probabilities.
__all__ = [
    "CALIBRATIONS",
    "DECODINGS",
    "Decoding",
    "HeadClassifier",
    "choose_decoding",
    "class_weights",
    "decode_ordinal",
    "expected_position",
    "predict_with_tta",
    "seed_everything",
]

CALIBRATIONS = ("temperature", "none")

Features = npt.NDArray[np.float32]
Positions = npt.NDArray[np.int64]
Grades = npt.NDArray[np.int64]


@dataclass
class _Split:
    """Training and validation rows of one fit (no validation rows: ``X_val`` is None)."""

    X_train: Features
    y_train: Positions
    X_val: Features | None
    y_val: Positions | None
    train_rows: Positions
    val_rows: Positions


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TensorFlow and make TF ops deterministic (same seed, same model).

    ``enable_op_determinism`` is process-wide and TF offers no public way to switch it off again;
    it costs nothing measurable for this small head and only forbids ops without a deterministic
    kernel, which neither the head nor feature extraction uses.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def class_weights(
    y_index: np.ndarray, n_classes: int, mode: str | dict[int, float] | None
) -> dict[int, float] | None:
    """Per-class loss weights keyed by class *position*.

    ``"balanced"``: n / (k * count) as scikit-learn; ``"sqrt"``: its square root (a softer
    correction that keeps the majority grade's precision); a dict keyed by position; ``None``.
    """
    if mode is None:
        return None
    if isinstance(mode, dict):
        return {int(k): float(v) for k, v in mode.items()}
    counts = np.bincount(y_index, minlength=n_classes).astype(np.float64)
    present = counts > 0
    balanced = np.ones(n_classes)
    balanced[present] = counts.sum() / (present.sum() * counts[present])
    if mode == "balanced":
        weights = balanced
    elif mode == "sqrt":
        weights = np.sqrt(balanced)
    else:
        raise ValueError(f"class_weight must be 'balanced', 'sqrt', a dict or None, got {mode!r}")
    return {i: float(w) for i, w in enumerate(weights)}


class HeadClassifier:
    """Dropout + softmax head over standardised features; grades given as ints on ``classes``.

    Parameters are stored untouched by ``__init__``; everything learned ends in ``_``.
    ``learning_rate=1.0``: the recipe ran Keras 2's Adadelta, whose default rate was 1.0; Keras 3
    lowered the default to 0.001, with which this head barely moves in a hundred epochs.
    """

    def __init__(
        self,
        *,
        classes: Sequence[int] = ICDR_GRADES,
        dropout: float = 0.5,
        optimizer: str = "adadelta",
        learning_rate: float = 1.0,
        batch_size: int = 64,
        epochs: int = 100,
        # Full "balanced" weights cost ~0.02 QWK in 5-fold CV on the APTOS set; the square root
        # keeps QWK and gains accuracy over no weights (0.700 vs 0.682).
        class_weight: str | dict[int, float] | None = "sqrt",
        early_stopping: bool = True,
        patience: int = 10,
        validation_fraction: float = 0.1,
        decoding: str = "auto",
        calibration: str = "temperature",
        label_smoothing: float = 0.0,
        seed: int = DEFAULT_SEED,
        verbose: int = 0,
    ) -> None:
        self.classes = classes
        self.dropout = dropout
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.class_weight = class_weight
        self.early_stopping = early_stopping
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.decoding = decoding
        self.calibration = calibration
        self.label_smoothing = label_smoothing
        self.seed = seed
        self.verbose = verbose

    # -- parameters ---------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)
            for name in (
                "classes",
                "dropout",
                "optimizer",
                "learning_rate",
                "batch_size",
                "epochs",
                "class_weight",
                "early_stopping",
                "patience",
                "validation_fraction",
                "decoding",
                "calibration",
                "label_smoothing",
                "seed",
                "verbose",
            )
        }

    def set_params(self, **params: Any) -> HeadClassifier:
        for name, value in params.items():
            if name not in self.get_params():
                raise ValueError(f"unknown parameter {name!r}")
            setattr(self, name, value)
        return self

    # -- fitting ------------------------------------------------------------------------------
    def _positions(self, y: npt.ArrayLike, name: str) -> Positions:
        grades = np.asarray(y)
        lookup = {int(g): i for i, g in enumerate(self.classes_)}
        unknown = sorted({int(g) for g in grades.tolist()} - set(lookup))
        if unknown:
            raise ValueError(
                f"{name} holds grades {unknown} not on the scale {list(self.classes_)}"
            )
        return np.asarray([lookup[int(g)] for g in grades], dtype=np.int64)

    def _check_features(self, X: npt.ArrayLike) -> Features:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"features must be 2-D (n_images, n_features), got shape {X.shape}")
        if hasattr(self, "n_features_in_") and X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"features have {X.shape[1]} columns but the head was trained on "
                f"{self.n_features_in_}"
            )
        if not np.isfinite(X).all():
            raise ValueError("features contain NaN or infinite values")
        return X

    def _build(self, n_features: int, n_classes: int, steps_per_execution: int) -> Any:
        import keras

        model = keras.Sequential(
            [
                keras.Input(shape=(n_features,), name="features"),
                keras.layers.Dropout(self.dropout, name="dropout"),
                keras.layers.Dense(n_classes, activation="softmax", name="grades"),
            ],
            name="head",
        )
        optimizer = keras.optimizers.get(
            {"class_name": self.optimizer, "config": {"learning_rate": self.learning_rate}}
        )
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=self.label_smoothing),
            metrics=["accuracy"],
            # One graph call per epoch-sized chunk of steps: Keras' per-step Python overhead
            # is ~5 ms, far more than this head's arithmetic.
            steps_per_execution=steps_per_execution,
        )
        return model

    def fit(
        self,
        X: npt.ArrayLike,
        y: npt.ArrayLike,
        *,
        groups: npt.ArrayLike | None = None,
        variant: npt.ArrayLike | None = None,
        validation_data: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
        epoch_callback: Callable[[int, dict[str, float]], None] | None = None,
    ) -> HeadClassifier:
        """Fit on features ``X`` (n, d) and grades ``y``.

        ``groups``: patient/source group per row (augmented rows carry their source's group);
        ``variant``: 0 for an original image, k >= 1 for its k-th augmented copy. Without
        ``validation_data`` a grouped, stratified ``validation_fraction`` of the original images
        is held out for early stopping and the ordinal thresholds; their variants are dropped.
        """
        self._check_params()
        self.classes_ = np.asarray(list(self.classes), dtype=np.int64)
        features = self._check_features(X)
        y_index = self._positions(y, "y")
        if y_index.size != features.shape[0]:
            raise ValueError(f"{features.shape[0]} feature rows but {y_index.size} grades")
        variants = np.zeros(y_index.size, np.int64) if variant is None else np.asarray(variant)
        if variants.size != y_index.size:
            raise ValueError("variant must have one entry per row")
        if groups is None and (variants > 0).any():
            raise ValueError("augmented rows need groups (their source image's group) to split")
        split = self._validation_split(features, y_index, groups, variants, validation_data)
        # Rows of X used to train and to validate (early stopping, thresholds); with external
        # validation_data all rows train and val_rows is empty.
        self.training_rows_ = np.asarray(split.train_rows, dtype=np.int64)
        self.validation_rows_ = np.asarray(split.val_rows, dtype=np.int64)
        self.n_features_in_ = features.shape[1]
        self._fit_scaler(split.X_train, split.y_train)
        self._train_network(split, epoch_callback)
        self._calibrate(split)
        self._fit_decoding(split)
        return self

    def _check_params(self) -> None:
        if self.decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS}, got {self.decoding!r}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise ValueError(f"classes must be >= 2 distinct grades, got {list(self.classes)}")

    def _validation_split(
        self,
        X: Features,
        y_index: Positions,
        groups: npt.ArrayLike | None,
        variants: npt.NDArray[np.int64],
        validation_data: tuple[npt.ArrayLike, npt.ArrayLike] | None,
    ) -> _Split:
        """The rows that train and those that validate (early stopping, calibration, decoding):
        ``validation_data`` when given, else a grouped hold-out of original images (their
        augmented copies and group mates stay out of training), else none."""
        all_rows = np.arange(y_index.size)
        if validation_data is not None:
            return _Split(
                X_train=X,
                y_train=y_index,
                X_val=self._check_features(validation_data[0]),
                y_val=self._positions(validation_data[1], "validation grades"),
                train_rows=all_rows,
                val_rows=np.arange(0),
            )
        if not (self.early_stopping or self.decoding != "argmax"):
            return _Split(X, y_index, None, None, all_rows, np.arange(0))
        row_groups = all_rows if groups is None else np.asarray(groups, dtype=object)
        originals = np.flatnonzero(variants == 0)
        train_pos, val_pos = grouped_holdout(
            y_index[originals],
            list(row_groups[originals]),
            test_fraction=self.validation_fraction,
            seed=self.seed,
        )
        val_groups = set(row_groups[originals[val_pos]].tolist())
        in_val_group = np.asarray([g in val_groups for g in row_groups.tolist()])
        val_rows = np.flatnonzero(in_val_group & (variants == 0))
        train_rows = np.flatnonzero(~in_val_group)
        return _Split(
            X_train=X[train_rows],
            y_train=y_index[train_rows],
            X_val=X[val_rows],
            y_val=y_index[val_rows],
            train_rows=train_rows,
            val_rows=val_rows,
        )

    def _fit_scaler(self, X_train: Features, y_train: Positions) -> None:
        """Standardisation and class weights from the training rows only."""
        k = len(self.classes_)
        self.scaler_mean_ = X_train.mean(axis=0).astype(np.float32)
        scale = X_train.std(axis=0).astype(np.float32)
        # Constant features (e.g. dead ReLU channels) keep scale 1 as in scikit-learn.
        self.scaler_scale_ = np.where(scale > 1e-12, scale, 1.0).astype(np.float32)
        self.class_counts_ = np.bincount(y_train, minlength=k)
        self.class_weight_ = class_weights(y_train, k, self.class_weight)

    def _datasets(self, split: _Split) -> tuple[Any, Any]:
        """(training, validation or None) tf.data datasets of standardised rows, one-hot."""
        import keras
        import tensorflow as tf

        k = len(self.classes_)
        y_train = split.y_train
        train_data = (
            tf.data.Dataset.from_tensor_slices(
                (self._standardise(split.X_train), keras.utils.to_categorical(y_train, k))
            )
            .shuffle(y_train.size, seed=self.seed, reshuffle_each_iteration=True)
            .batch(self.batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
        if split.X_val is None:
            return train_data, None
        validation = (
            tf.data.Dataset.from_tensor_slices(
                (self._standardise(split.X_val), keras.utils.to_categorical(split.y_val, k))
            )
            .batch(1024)
            .cache()
        )
        return train_data, validation

    def _train_network(
        self, split: _Split, epoch_callback: Callable[[int, dict[str, float]], None] | None
    ) -> None:
        """Build and fit the Keras head (early stopping on the validation loss, best weights)."""
        import keras

        seed_everything(self.seed)
        steps_per_epoch = -(-split.y_train.size // self.batch_size)
        model = self._build(
            split.X_train.shape[1], len(self.classes_), steps_per_execution=steps_per_epoch
        )
        train_data, fit_validation = self._datasets(split)
        callbacks: list[Any] = []
        if fit_validation is not None and self.early_stopping:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=self.patience, restore_best_weights=True
                )
            )
        if epoch_callback is not None:
            callbacks.append(
                keras.callbacks.LambdaCallback(
                    on_epoch_end=lambda epoch, logs: epoch_callback(epoch, dict(logs or {}))
                )
            )
        started = time.perf_counter()
        history = model.fit(
            train_data,
            epochs=self.epochs,
            shuffle=False,  # the dataset reshuffles itself, seeded
            validation_data=fit_validation,
            class_weight=self.class_weight_,
            callbacks=callbacks,
            verbose=self.verbose,
        )
        self.fit_seconds_ = time.perf_counter() - started
        self.model_ = model
        self.history_ = {key: [float(v) for v in values] for key, values in history.history.items()}
        self.n_epochs_ = len(history.history["loss"])
        if split.X_val is not None and "val_loss" in self.history_:
            self.best_epoch_ = int(np.argmin(self.history_["val_loss"])) + 1
        else:
            self.best_epoch_ = self.n_epochs_

    def _calibrate(self, split: _Split) -> None:
        """Temperature scaling fitted on the validation rows (1: none)."""
        self.temperature_ = 1.0
        self.calibration_: dict[str, Any] | None = None
        X_val, y_val = split.X_val, split.y_val
        if X_val is None or y_val is None or not y_val.size or self.calibration != "temperature":
            return
        raw_val = self._raw_proba(X_val)
        self.temperature_ = fit_temperature(logits_from_proba(raw_val), y_val)
        classes = tuple(self.classes_)
        self.calibration_ = {
            "method": "temperature",
            "temperature": self.temperature_,
            "n_validation": int(y_val.size),
            "ece_before": expected_calibration_error(
                self.classes_[y_val], raw_val, classes=classes
            ),
            "ece_after": expected_calibration_error(
                self.classes_[y_val], self.predict_proba(X_val), classes=classes
            ),
        }

    def _fit_decoding(self, split: _Split) -> None:
        """Argmax, or ordinal thresholds chosen on the validation rows (fitted on the training
        rows when ``decoding="ordinal"`` has no validation rows)."""
        self.thresholds_: npt.NDArray[np.float64] | None = None
        self.decoding_ = "argmax"
        self.validation_qwk_: dict[str, float] | None = None
        if split.X_val is not None and split.y_val is not None and self.decoding != "argmax":
            self._choose_decoding(self.predict_proba(split.X_val), split.y_val)
        elif self.decoding == "ordinal":
            self.thresholds_ = fit_ordinal_thresholds(
                expected_position(self.predict_proba(split.X_train)),
                split.y_train,
                len(self.classes_),
            )
            self.decoding_ = "ordinal"

    def _choose_decoding(self, proba_val: np.ndarray, y_val: np.ndarray) -> None:
        """Decoding from calibrated held-out probabilities (:func:`choose_decoding`)."""
        chosen = choose_decoding(proba_val, y_val, mode=self.decoding, seed=self.seed)
        self.decoding_ = chosen.method
        self.thresholds_ = chosen.thresholds
        self.validation_qwk_ = chosen.validation_qwk

    # -- prediction ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this HeadClassifier is not fitted yet; call fit() first")

    def _standardise(self, X: Features) -> Features:
        return np.asarray((X - self.scaler_mean_) / self.scaler_scale_, dtype=np.float32)

    def _raw_proba(self, X: npt.ArrayLike) -> Floats:
        """The network's softmax, before calibration."""
        self._check_fitted()
        X = self._check_features(X)
        if X.shape[0] == 0:
            return np.zeros((0, len(self.classes_)), dtype=np.float64)
        proba = self.model_.predict(self._standardise(X), batch_size=1024, verbose=0)
        return np.asarray(proba, dtype=np.float64)

    def predict_proba(self, X: npt.ArrayLike) -> Floats:
        """Calibrated probabilities (n, n_grades), columns in ``classes_`` order."""
        raw = self._raw_proba(X)
        temperature = float(getattr(self, "temperature_", 1.0) or 1.0)
        if temperature == 1.0 or raw.shape[0] == 0:
            return raw
        return apply_temperature(logits_from_proba(raw), temperature)

    def decode(self, proba: npt.ArrayLike) -> Grades:
        """Grades from probabilities with the learned decoding."""
        self._check_fitted()
        decoding = Decoding(self.decoding_, self.thresholds_, self.validation_qwk_)
        return self.classes_[decoding.positions(proba)]

    def predict(self, X: npt.ArrayLike) -> Grades:
        return self.decode(self.predict_proba(X))

    # -- CAM support --------------------------------------------------------------------------
    def effective_weights(self) -> tuple[Floats, Floats]:
        """Dense kernel and bias with the standardisation folded in, in raw feature units.

        logits = ((x - mean) / scale) @ W + b = x @ (W / scale[:, None]) + (b - (mean/scale) @ W)
        """
        self._check_fitted()
        kernel, bias = self.model_.get_layer("grades").get_weights()
        folded_kernel = kernel / self.scaler_scale_[:, None]
        folded_bias = bias - (self.scaler_mean_ / self.scaler_scale_) @ kernel
        return np.asarray(folded_kernel, np.float64), np.asarray(folded_bias, np.float64)


def predict_with_tta(
    classifier: HeadClassifier,
    X: npt.ArrayLike,
    X_variants: npt.NDArray[np.floating[Any]] | None = None,
) -> Floats:
    """Probabilities, averaged over the original and its augmented copies when given."""
    proba = classifier.predict_proba(X)
    if X_variants is None or not X_variants.shape[1]:
        return proba
    n, v, d = X_variants.shape
    variant_proba = classifier.predict_proba(X_variants.reshape(-1, d)).reshape(n, v, -1)
    return np.asarray((proba + variant_proba.sum(axis=1)) / (v + 1), dtype=np.float64)
