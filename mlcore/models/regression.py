"""An ordinal regression head on frozen features (the APTOS 2019 winners' output): one score per
image, grades read off it with thresholds that maximise QWK.

standardised features -> ridge regression of the grade position (0..k-1) -> score;
grade = number of thresholds below the score. Every choice is made on an inner grouped,
stratified validation split of the data given to ``fit`` (the ridge penalty among ``alphas`` by
validation squared error, the thresholds by validation QWK), so an outer test fold is never
looked at. Probabilities (for the referable AUC and calibration) come from a cumulative-logit
link fitted on the same validation split: ``P(grade <= j) = sigmoid((c_j - score) / s)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcore.data.splits import DEFAULT_SEED, grouped_holdout
from mlcore.evaluation.metrics import ICDR_GRADES
from mlcore.models.calibration import Floats, decode_ordinal, fit_ordinal_thresholds

Positions = npt.NDArray[np.int64]


def _sigmoid(x: Floats) -> Floats:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float64)


def cumulative_logit_proba(scores: npt.ArrayLike, cutpoints: npt.ArrayLike, scale: float) -> Floats:
    """Class probabilities (n, k) of a cumulative-logit model with k-1 increasing cut points."""
    s = np.asarray(scores, dtype=np.float64)[:, None]
    cuts = np.asarray(cutpoints, dtype=np.float64)[None, :]
    below = _sigmoid((cuts - s) / scale)
    cumulative = np.concatenate([np.zeros((s.shape[0], 1)), below, np.ones((s.shape[0], 1))], 1)
    proba = np.clip(np.diff(cumulative, axis=1), 1e-9, None)
    return np.asarray(proba / proba.sum(axis=1, keepdims=True), dtype=np.float64)


def fit_cumulative_logit(
    scores: npt.ArrayLike, y_index: npt.ArrayLike, n_classes: int
) -> tuple[Floats, float]:
    """(cut points, scale) maximising the likelihood of ``y_index`` given the scores."""
    from scipy.optimize import minimize

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y_index, dtype=np.int64)

    def unpack(theta: Floats) -> tuple[Floats, float]:
        cuts = theta[0] + np.concatenate([[0.0], np.cumsum(np.exp(theta[1 : n_classes - 1]))])
        return cuts, float(np.exp(theta[-1]))

    def loss(theta: Floats) -> float:
        cuts, scale = unpack(theta)
        proba = cumulative_logit_proba(s, cuts, scale)
        return float(-np.mean(np.log(proba[np.arange(y.size), y])))

    start = np.concatenate([[0.5], np.zeros(n_classes - 2), [np.log(0.5)]])
    result = minimize(loss, start, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-5})
    return unpack(np.asarray(result.x, dtype=np.float64))


class RegressionHead:
    """Ridge regression of the grade position with QWK-optimised thresholds (see the module
    docstring); a scikit-learn-like estimator: learned attributes end in ``_``."""

    def __init__(
        self,
        *,
        classes: Sequence[int] = ICDR_GRADES,
        alphas: Sequence[float] = (1.0, 10.0, 100.0, 1000.0, 10000.0),
        validation_fraction: float = 0.15,
        seed: int = DEFAULT_SEED,
    ) -> None:
        self.classes = classes
        self.alphas = alphas
        self.validation_fraction = validation_fraction
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "alphas": self.alphas,
            "validation_fraction": self.validation_fraction,
            "seed": self.seed,
        }

    def _positions(self, y: npt.ArrayLike) -> Positions:
        lookup = {int(g): i for i, g in enumerate(self.classes)}
        grades = np.asarray(y).tolist()
        unknown = sorted({int(g) for g in grades} - set(lookup))
        if unknown:
            raise ValueError(f"grades {unknown} are not on the scale {list(self.classes)}")
        return np.asarray([lookup[int(g)] for g in grades], dtype=np.int64)

    def fit(
        self, X: npt.ArrayLike, y: npt.ArrayLike, *, groups: npt.ArrayLike | None = None
    ) -> RegressionHead:
        """Fit on features ``X`` (n, d) and grades ``y``; ``groups`` (a patient per row) keep
        a patient on one side of the inner validation split."""
        from sklearn.linear_model import Ridge

        if not self.alphas:
            raise ValueError("alphas must hold at least one ridge penalty")
        features = np.asarray(X, dtype=np.float64)
        if features.ndim != 2 or not np.isfinite(features).all():
            raise ValueError("features must be a finite 2-D array (n_images, n_features)")
        y_index = self._positions(y)
        if y_index.size != features.shape[0]:
            raise ValueError(f"{features.shape[0]} feature rows but {y_index.size} grades")
        k = len(self.classes)
        self.classes_ = np.asarray(list(self.classes), dtype=np.int64)
        row_groups = None if groups is None else list(np.asarray(groups).tolist())
        train, val = grouped_holdout(
            y_index, row_groups, test_fraction=self.validation_fraction, seed=self.seed
        )
        self.scaler_mean_ = features[train].mean(axis=0)
        scale = features[train].std(axis=0)
        self.scaler_scale_ = np.where(scale > 1e-12, scale, 1.0)
        z = (features - self.scaler_mean_) / self.scaler_scale_
        fits = [Ridge(alpha=a).fit(z[train], y_index[train]) for a in self.alphas]
        errors = [float(np.mean((f.predict(z[val]) - y_index[val]) ** 2)) for f in fits]
        best = int(np.argmin(errors))
        self.alpha_ = float(self.alphas[best])
        self.validation_mse_ = dict(zip([float(a) for a in self.alphas], errors, strict=True))
        self.model_ = fits[best]
        val_scores = np.asarray(self.model_.predict(z[val]), dtype=np.float64)
        self.thresholds_ = fit_ordinal_thresholds(val_scores, y_index[val], k)
        self.cutpoints_, self.link_scale_ = fit_cumulative_logit(val_scores, y_index[val], k)
        self.n_validation_ = int(val.size)
        return self

    def scores(self, X: npt.ArrayLike) -> Floats:
        """The regression's expected grade position of each row."""
        if not hasattr(self, "model_"):
            raise RuntimeError("this RegressionHead is not fitted yet; call fit() first")
        z = (np.asarray(X, dtype=np.float64) - self.scaler_mean_) / self.scaler_scale_
        return np.asarray(self.model_.predict(z), dtype=np.float64)

    def predict_proba(self, X: npt.ArrayLike) -> Floats:
        """Probabilities (n, k) from the cumulative-logit link of the scores."""
        return cumulative_logit_proba(self.scores(X), self.cutpoints_, self.link_scale_)

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Grades: the QWK-optimised thresholds applied to the scores."""
        positions = decode_ordinal(self.scores(X), self.thresholds_)
        return np.asarray(self.classes_[positions], dtype=np.int64)
