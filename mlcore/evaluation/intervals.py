"""Bootstrap 95 % intervals of the headline metrics, and paired comparison of two models.

Both resample images with replacement, or whole patients when each image's patient is given
(percentile bootstrap, a fixed seed so a page shows the same interval on every load; resamples
where a figure is undefined are dropped and counted). A version's figures come from its
out-of-fold predictions; two versions are compared on the same images, resampled together
(paired), so the interval is on the difference itself and not on two independent noises.

Numpy, scipy and scikit-learn only (the web process imports this module).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcore.evaluation.metrics import (
    ICDR_GRADES,
    REFERABLE_FROM,
    expected_calibration_error,
    quadratic_weighted_kappa,
    referable_probability,
)

CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 2017

# Verdicts of a paired comparison: the interval of (candidate - reference) QWK lies above 0,
# below 0, or contains 0.
BETTER, WORSE, INDISTINGUISHABLE = "better", "worse", "indistinguishable"

# A patient (or any group) per image: a list, or an array of ids.
Groups = Sequence[object] | npt.NDArray[np.generic]
# Image positions in -> a figure out (NaN where undefined on that resample).
Statistic = Callable[[npt.NDArray[np.int64]], float]


def _interval(
    statistic: Statistic,
    n: int,
    *,
    n_resamples: int,
    seed: int,
    groups: Groups | None = None,
) -> tuple[float, float, int] | None:
    """Percentile interval of ``statistic(indices)`` over bootstrap resamples of ``range(n)``,
    and how many resamples were undefined (NaN: e.g. an AUC on a resample with one class).

    The undefined resamples are dropped, not allowed to void the interval; with more than
    half of them undefined there is no interval (None). With ``groups`` (a patient per image)
    whole groups are resampled: the two eyes and the visits of one patient are not
    independent, and resampling them apart would narrow the interval."""
    if n < 2:
        return None
    if groups is None:
        units = [np.asarray([i]) for i in range(n)]
    else:
        if len(groups) != n:
            raise ValueError(f"{n} images but {len(groups)} group entries")
        _, inverse = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.flatnonzero(np.diff(inverse[order])) + 1
        units = np.split(order, bounds)
        if len(units) < 2:
            return None
    rng = np.random.default_rng(seed)
    values = np.asarray(
        [
            statistic(np.concatenate([units[u] for u in rng.integers(0, len(units), len(units))]))
            for _ in range(n_resamples)
        ],
        dtype=np.float64,
    )
    defined = values[np.isfinite(values)]
    undefined = int(values.size - defined.size)
    if defined.size < max(2, values.size / 2):
        return None
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(defined, [alpha, 1 - alpha])
    return float(low), float(high), undefined


def _fast_qwk(true_pos: npt.NDArray[np.int64], pred_pos: npt.NDArray[np.int64], k: int) -> float:
    """QWK on scale positions 0..k-1 (the same formula as ``metrics.quadratic_weighted_kappa``,
    without its input checks: it runs a thousand times per interval)."""
    observed = np.bincount(true_pos * k + pred_pos, minlength=k * k).reshape(k, k).astype(float)
    positions = np.arange(k, dtype=np.float64)
    weights = (positions[:, None] - positions[None, :]) ** 2
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    expected_disagreement = float((weights * expected).sum())
    observed_disagreement = float((weights * observed).sum())
    if expected_disagreement == 0.0:
        return 1.0 if observed_disagreement == 0.0 else 0.0
    return 1.0 - observed_disagreement / expected_disagreement


def _positions(grades: npt.NDArray[np.int64], classes: Sequence[int]) -> npt.NDArray[np.int64]:
    lookup = {grade: i for i, grade in enumerate(classes)}
    return np.asarray([lookup[int(g)] for g in grades], dtype=np.int64)


def _auc(true_referable: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64]) -> float:
    from sklearn.metrics import roc_auc_score

    if true_referable.all() or not true_referable.any():
        return float("nan")  # a resample with one class: no AUC (dropped, and counted)
    return float(roc_auc_score(true_referable, scores))


def metric_intervals(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    proba: npt.ArrayLike | None = None,
    *,
    classes: Sequence[int] = ICDR_GRADES,
    referable_from: int = REFERABLE_FROM,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    groups: Groups | None = None,
) -> dict[str, Any]:
    """95 % bootstrap intervals ``[low, high]`` of QWK, accuracy, referable sensitivity,
    specificity and AUC, and ECE (the last two need ``proba``); ``None`` where undefined.
    ``groups``: a patient per image, resampled whole. ``undefined_resamples``: per figure, how
    many resamples had no value and were dropped (only figures with some)."""
    true = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    true_ref, pred_ref = true >= referable_from, pred >= referable_from
    true_pos, pred_pos, k = _positions(true, classes), _positions(pred, classes), len(classes)
    statistics: dict[str, Statistic] = {
        "qwk": lambda i: _fast_qwk(true_pos[i], pred_pos[i], k),
        "accuracy": lambda i: float(np.mean(true[i] == pred[i])),
        "referable_sensitivity": lambda i: (
            float((pred_ref[i] & true_ref[i]).sum() / true_ref[i].sum())
            if true_ref[i].any()
            else float("nan")
        ),
        "referable_specificity": lambda i: (
            float((~pred_ref[i] & ~true_ref[i]).sum() / (~true_ref[i]).sum())
            if (~true_ref[i]).any()
            else float("nan")
        ),
    }
    if proba is not None:
        array = np.asarray(proba, dtype=np.float64)
        scores = referable_probability(array, classes=classes, referable_from=referable_from)
        statistics["referable_auc"] = lambda i: _auc(true_ref[i], scores[i])
        statistics["ece"] = lambda i: expected_calibration_error(true[i], array[i], classes=classes)
    out: dict[str, Any] = {}
    undefined: dict[str, int] = {}
    for name, statistic in statistics.items():
        interval = _interval(
            statistic, true.size, n_resamples=n_resamples, seed=seed, groups=groups
        )
        out[name] = None if interval is None else [interval[0], interval[1]]
        if interval is not None and interval[2]:
            undefined[name] = interval[2]
    out["undefined_resamples"] = undefined
    return out


def paired_qwk_difference(
    y_true: npt.ArrayLike,
    reference_pred: npt.ArrayLike,
    candidate_pred: npt.ArrayLike,
    *,
    classes: Sequence[int] = ICDR_GRADES,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    groups: Groups | None = None,
) -> dict[str, Any]:
    """QWK of the candidate minus QWK of the reference on the same images, with a paired
    bootstrap 95 % interval and a verdict: ``better`` / ``worse`` when the interval excludes 0,
    else ``indistinguishable``. ``groups``: a patient per image, resampled whole."""
    true = np.asarray(y_true, dtype=np.int64)
    first = np.asarray(reference_pred, dtype=np.int64)
    second = np.asarray(candidate_pred, dtype=np.int64)
    if not (true.size == first.size == second.size):
        raise ValueError("y_true and both predictions must have one grade per image")

    true_pos, k = _positions(true, classes), len(classes)
    first_pos, second_pos = _positions(first, classes), _positions(second, classes)

    def difference(i: npt.NDArray[np.int64]) -> float:
        return _fast_qwk(true_pos[i], second_pos[i], k) - _fast_qwk(true_pos[i], first_pos[i], k)

    estimate = (
        quadratic_weighted_kappa(true, second, classes=classes)
        - quadratic_weighted_kappa(true, first, classes=classes)
        if true.size
        else float("nan")
    )
    found = _interval(difference, true.size, n_resamples=n_resamples, seed=seed, groups=groups)
    interval = None if found is None else found[:2]
    verdict = INDISTINGUISHABLE
    if interval is not None and interval[0] > 0:
        verdict = BETTER
    elif interval is not None and interval[1] < 0:
        verdict = WORSE
    return {
        "n": int(true.size),
        "difference": float(estimate),
        "interval": None if interval is None else [interval[0], interval[1]],
        "verdict": verdict,
        "confidence": CONFIDENCE,
        "n_resamples": n_resamples,
        "resampled": "patients" if groups is not None else "images",
    }


def _qwk_of_matrices(matrices: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """QWK of each confusion matrix in a stack (rows: true, columns: predicted); NaN where the
    expected disagreement is zero."""
    k = matrices.shape[-1]
    positions = np.arange(k)
    weights = (positions[:, None] - positions[None, :]) ** 2 / max(1, (k - 1) ** 2)
    totals = matrices.sum(axis=(-2, -1))
    expected = matrices.sum(axis=-1)[..., :, None] * matrices.sum(axis=-2)[..., None, :]
    expected = expected / totals[..., None, None]
    observed_cost = (weights * matrices).sum(axis=(-2, -1))
    expected_cost = (weights * expected).sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected_cost > 0, 1.0 - observed_cost / expected_cost, np.nan)


def confusion_intervals(
    matrix: npt.ArrayLike,
    *,
    referable_position: int,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, tuple[float, float] | None]:
    """95 % intervals of the figures a confusion matrix gives (rows: true grade positions,
    columns: predicted), for pages that aggregate in SQL and never hold the per-image rows.

    QWK: percentile bootstrap over images, drawn as multinomial resamples of the matrix's cells
    (the same as resampling the images it counts). Accuracy, referable sensitivity and
    specificity: Wilson intervals of their proportions (honest at small n and at 0 % / 100 %).
    """
    from mlcore.evaluation.agreement import wilson_interval

    matrix = np.asarray(matrix, dtype=np.int64)
    n = int(matrix.sum())
    out: dict[str, tuple[float, float] | None] = {
        "qwk": None,
        "accuracy": wilson_interval(int(np.trace(matrix)), n),
    }
    referable_true = matrix[referable_position:, :]
    non_referable_true = matrix[:referable_position, :]
    out["sensitivity"] = wilson_interval(
        int(referable_true[:, referable_position:].sum()), int(referable_true.sum())
    )
    out["specificity"] = wilson_interval(
        int(non_referable_true[:, :referable_position].sum()), int(non_referable_true.sum())
    )
    if n >= 2:
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(n, matrix.ravel() / n, size=resamples).reshape(
            resamples, *matrix.shape
        )
        qwks = _qwk_of_matrices(draws.astype(np.float64))
        qwks = qwks[np.isfinite(qwks)]
        if qwks.size:
            alpha = (1 - CONFIDENCE) / 2
            low, high = np.quantile(qwks, [alpha, 1 - alpha])
            out["qwk"] = (float(low), float(high))
    return out


def _quantile_interval(values: npt.NDArray[np.float64]) -> tuple[float, float] | None:
    defined = values[np.isfinite(values)]
    if defined.size < max(2, values.size / 2):
        return None
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(defined, [alpha, 1 - alpha])
    return float(low), float(high)


def patient_confusion_intervals(
    patient_matrices: npt.ArrayLike,
    *,
    referable_position: int,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, tuple[float, float] | None]:
    """95 % intervals of QWK, accuracy and referable sensitivity and specificity from one
    confusion matrix per patient (P, k, k), resampling whole *patients* with replacement (a
    patient's eyes and visits are not independent images).

    Aggregated in SQL like :func:`confusion_intervals`: patients with the same matrix are
    interchangeable, so drawing P patients is drawing a multinomial over the distinct matrices,
    whatever the number of patients. Resamples where a figure is undefined are dropped. When
    every patient has one image, patients are images: :func:`confusion_intervals` (its Wilson
    intervals of the proportions are the better ones at small n and at 0 % / 100 %)."""
    matrices = np.asarray(patient_matrices, dtype=np.int64)
    if matrices.size and (matrices.sum(axis=(1, 2)) == 1).all():
        return confusion_intervals(
            matrices.sum(axis=0), referable_position=referable_position, resamples=resamples,
            seed=seed,
        )  # fmt: skip
    out: dict[str, tuple[float, float] | None] = dict.fromkeys(
        ("qwk", "accuracy", "sensitivity", "specificity")
    )
    n_patients = matrices.shape[0]
    if n_patients < 2:
        return out
    k = matrices.shape[-1]
    patterns, counts = np.unique(matrices.reshape(n_patients, -1), axis=0, return_counts=True)
    draws = np.random.default_rng(seed).multinomial(n_patients, counts / n_patients, resamples)
    resampled = (draws @ patterns).reshape(resamples, k, k).astype(np.float64)
    totals = resampled.sum(axis=(1, 2))
    referable = resampled[:, referable_position:, :]
    other = resampled[:, :referable_position, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        figures = {
            "qwk": _qwk_of_matrices(resampled),
            "accuracy": np.trace(resampled, axis1=1, axis2=2) / totals,
            "sensitivity": referable[:, :, referable_position:].sum(axis=(1, 2))
            / referable.sum(axis=(1, 2)),
            "specificity": other[:, :, :referable_position].sum(axis=(1, 2))
            / other.sum(axis=(1, 2)),
        }
    for name, values in figures.items():
        out[name] = _quantile_interval(np.asarray(values, dtype=np.float64))
    return out
