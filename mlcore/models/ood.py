"""How far a photograph's features lie from the training set: an out-of-distribution score.

A head on frozen features answers with confidence wherever its input lands, including on a
blurred, dark or cropped photograph that looks like nothing it was trained on. The score here is
the Mahalanobis distance of the features to the training features under a probabilistic PCA model
(Tipping & Bishop 1999): the leading ``n_components`` directions keep their own variances and the
rest of the space shares one residual variance, so a photograph that moves the features off the
training subspace counts as much as one that moves them far along it, and the model stays a few
hundred kilobytes where a full covariance of thousands of features would not.

The distance is fitted on the inner training split and its threshold is the ``quantile`` of the
distances of the inner validation split (never the images it was fitted on, whose distances are
optimistic). :meth:`FeatureDistance.score` returns distance / threshold: above 1, outside the
training domain. Stored in the model folder as ``ood.npz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcore.data.splits import DEFAULT_SEED, grouped_holdout

OOD_FILE = "ood.npz"
Floats = npt.NDArray[np.float64]


@dataclass
class FeatureDistance:
    """Scikit-learn style: ``fit`` learns ``mean_``, ``components_``, ``variances_``,
    ``noise_variance_`` and ``threshold_``; ``score`` is the distance over the threshold."""

    n_components: int = 32
    quantile: float = 0.99
    validation_fraction: float = 0.2
    seed: int = DEFAULT_SEED

    def fit(
        self,
        X: npt.ArrayLike,
        y: npt.ArrayLike | None = None,
        groups: npt.ArrayLike | None = None,
    ) -> FeatureDistance:
        """Fit on the rows of ``X`` outside a grouped, grade-stratified inner validation split,
        and set the threshold on that split."""
        features = np.asarray(X, dtype=np.float64)
        if features.ndim != 2 or features.shape[0] < 10:
            raise ValueError(f"need at least 10 rows of features, got shape {features.shape}")
        labels = np.zeros(len(features), np.int64) if y is None else np.asarray(y)
        fit_rows, check_rows = grouped_holdout(
            labels,
            None if groups is None else np.asarray(groups),
            test_fraction=self.validation_fraction,
            seed=self.seed,
        )
        self._fit_distribution(features[fit_rows])
        distances = self.distance(features[check_rows])
        self.threshold_ = float(np.quantile(distances, self.quantile))
        self.n_fit_, self.n_check_ = int(fit_rows.size), int(check_rows.size)
        return self

    def _fit_distribution(self, features: Floats) -> None:
        self.mean_ = features.mean(axis=0)
        centred = features - self.mean_
        n, dim = centred.shape
        k = max(1, min(self.n_components, n - 1, dim - 1))
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        eigen = singular**2 / max(n - 1, 1)
        total = float(np.sum(centred**2)) / max(n - 1, 1)
        residual = max(total - float(eigen[:k].sum()), 0.0) / max(dim - k, 1)
        # A floor keeps a rank-deficient training set (fewer images than features) from turning
        # every direction it did not see into an infinite distance.
        floor = 1e-6 * max(total / dim, 1e-12)
        self.components_ = vt[:k]
        self.variances_ = np.maximum(eigen[:k], floor)
        self.noise_variance_ = max(residual, floor)

    def distance(self, X: npt.ArrayLike) -> Floats:
        """Mahalanobis distance of each row under the fitted probabilistic PCA model."""
        centred = np.asarray(X, dtype=np.float64) - self.mean_
        projected = centred @ self.components_.T
        inside = np.sum(projected**2 / self.variances_, axis=1)
        off_subspace = np.sum(centred**2, axis=1) - np.sum(projected**2, axis=1)
        squared = inside + np.maximum(off_subspace, 0.0) / self.noise_variance_
        return np.asarray(np.sqrt(squared), dtype=np.float64)

    def score(self, X: npt.ArrayLike) -> Floats:
        """Distance over the threshold: above 1 means outside the training domain."""
        return self.distance(X) / self.threshold_

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / OOD_FILE
        np.savez(
            path,
            mean=self.mean_,
            components=self.components_,
            variances=self.variances_,
            noise_variance=np.float64(self.noise_variance_),
            threshold=np.float64(self.threshold_),
            quantile=np.float64(self.quantile),
            counts=np.asarray([self.n_fit_, self.n_check_], np.int64),
        )
        return path

    def summary(self) -> dict[str, Any]:
        return {
            "method": "Mahalanobis distance, probabilistic PCA",
            "components": int(self.components_.shape[0]),
            "quantile": self.quantile,
            "threshold": self.threshold_,
            "fit_images": self.n_fit_,
            "threshold_images": self.n_check_,
        }


def ood_load(folder: str | Path) -> FeatureDistance | None:
    """The model folder's fitted distance, or None when the folder has none (older versions,
    fine-tuned networks)."""
    path = Path(folder) / OOD_FILE
    if not path.is_file():
        return None
    with np.load(path) as stored:
        scorer = FeatureDistance(quantile=float(stored["quantile"]))
        scorer.mean_ = stored["mean"]
        scorer.components_ = stored["components"]
        scorer.variances_ = stored["variances"]
        scorer.noise_variance_ = float(stored["noise_variance"])
        scorer.threshold_ = float(stored["threshold"])
        scorer.n_fit_, scorer.n_check_ = (int(c) for c in stored["counts"])
    scorer.n_components = int(scorer.components_.shape[0])
    return scorer


# More rows add little to 32 components and a 99th percentile, and cost memory (float64 copies).
MAX_FIT_ROWS = 6000


def ood_fit_save(
    folder: str | Path,
    features: npt.ArrayLike,
    grades: npt.ArrayLike,
    groups: npt.ArrayLike | None,
    *,
    rows: npt.NDArray[np.int64] | None = None,
    seed: int = DEFAULT_SEED,
) -> FeatureDistance | None:
    """Fit the distance on a model's training features (``rows`` of them: the training side of
    its hold-out split; at most ``MAX_FIT_ROWS``, drawn at random) and store it in its folder.
    None, and nothing stored, when there are too few images to set a threshold."""
    matrix = np.asarray(features)
    chosen = np.arange(len(matrix)) if rows is None else np.asarray(rows)
    if matrix.ndim != 2 or chosen.size < 20:
        return None
    if chosen.size > MAX_FIT_ROWS:
        chosen = np.sort(np.random.default_rng(seed).choice(chosen, MAX_FIT_ROWS, replace=False))
    labels = np.asarray(grades)[chosen]
    grouping = None if groups is None else np.asarray(groups)[chosen]
    scorer = FeatureDistance(seed=seed).fit(matrix[chosen], labels, grouping)
    scorer.save(folder)
    return scorer
