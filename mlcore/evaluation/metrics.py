"""Clinical metrics for DR grading (numpy + scikit-learn only, never TensorFlow).

The web process imports this module to compute clinician/model and clinician/clinician agreement,
so it must stay light. Grades are ints on an ordered scale passed in as ``classes`` (ICDR 0-4 by
default); nothing here assumes a particular scale beyond "referable from grade N upwards".
Grades and probabilities come in as anything ``numpy.asarray`` reads (lists, arrays).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

ICDR_GRADES: tuple[int, ...] = (0, 1, 2, 3, 4)
ICDR_LABELS: dict[int, str] = {
    0: "No DR",
    1: "Mild NPDR",
    2: "Moderate NPDR",
    3: "Severe NPDR",
    4: "Proliferative DR",
}
REFERABLE_FROM = 2  # ICDR: moderate NPDR or worse is referable


def _as_grades(values: npt.ArrayLike, classes: Sequence[int], name: str) -> npt.NDArray[np.int64]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of grades, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array.astype(float), 1), 0)):
            raise ValueError(f"{name} must hold integer grades, got {array.dtype}")
        array = array.astype(np.int64)
    unknown = sorted(set(array.tolist()) - set(classes))
    if unknown:
        raise ValueError(f"{name} holds grades {unknown} that are not on the scale {list(classes)}")
    return array.astype(np.int64)


def _check_pair(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, classes: Sequence[int]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    true = _as_grades(y_true, classes, "y_true")
    pred = _as_grades(y_pred, classes, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} grades but y_pred has {pred.size}")
    if true.size == 0:
        raise ValueError("no grades to compare")
    return true, pred


def _check_proba(proba: npt.ArrayLike, n: int, classes: Sequence[int]) -> npt.NDArray[np.float64]:
    array = np.asarray(proba, dtype=np.float64)
    if array.shape != (n, len(classes)):
        raise ValueError(
            f"proba must have shape ({n}, {len(classes)}) (one column per grade), got {array.shape}"
        )
    return array


def accuracy(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, *, classes: Sequence[int] = ICDR_GRADES
) -> float:
    true, pred = _check_pair(y_true, y_pred, classes)
    return float(np.mean(true == pred))


def confusion(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, *, classes: Sequence[int] = ICDR_GRADES
) -> npt.NDArray[np.int64]:
    """Counts with rows = true grade, columns = predicted grade, both in scale order."""
    true, pred = _check_pair(y_true, y_pred, classes)
    position = {grade: i for i, grade in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(matrix, ([position[g] for g in true], [position[g] for g in pred]), 1)
    return matrix


def quadratic_weighted_kappa(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, *, classes: Sequence[int] = ICDR_GRADES
) -> float:
    """Cohen's kappa with quadratic disagreement weights over the scale positions.

    Returns 1.0 when both raters agree perfectly even if only one grade occurs (scikit-learn returns
    NaN there; a perfect agreement on a small batch should read as agreement, not as missing).
    """
    observed = confusion(y_true, y_pred, classes=classes)
    if len(classes) < 2:
        raise ValueError("a scale needs at least two grades")
    return qwk_from_confusion(observed)


def per_grade_precision_recall(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, *, classes: Sequence[int] = ICDR_GRADES
) -> dict[int, dict[str, float | int | None]]:
    """Precision and recall per grade; ``None`` where undefined (no prediction / no case)."""
    return _per_grade(confusion(y_true, y_pred, classes=classes), classes)


def _per_grade(
    matrix: npt.NDArray[np.int64], classes: Sequence[int]
) -> dict[int, dict[str, float | int | None]]:
    result: dict[int, dict[str, float | int | None]] = {}
    for i, grade in enumerate(classes):
        true_positive = int(matrix[i, i])
        predicted = int(matrix[:, i].sum())
        actual = int(matrix[i, :].sum())
        result[int(grade)] = {
            "precision": true_positive / predicted if predicted else None,
            "recall": true_positive / actual if actual else None,
            "support": actual,
        }
    return result


def referable_probability(
    proba: npt.ArrayLike,
    *,
    classes: Sequence[int] = ICDR_GRADES,
    referable_from: int = REFERABLE_FROM,
) -> npt.NDArray[np.float64]:
    """P(referable) = sum of the probabilities of the grades >= ``referable_from``."""
    array = np.asarray(proba, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != len(classes):
        raise ValueError(f"proba must have one column per grade {list(classes)}, got {array.shape}")
    mask = np.asarray([grade >= referable_from for grade in classes])
    if not mask.any() or mask.all():
        raise ValueError(f"referable_from={referable_from} must split the scale {list(classes)}")
    referable: npt.NDArray[np.float64] = array[:, mask].sum(axis=1)
    return referable


def referable_metrics(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    proba: npt.ArrayLike | None = None,
    *,
    classes: Sequence[int] = ICDR_GRADES,
    referable_from: int = REFERABLE_FROM,
) -> dict[str, float | int | None]:
    """Referable-DR sensitivity/specificity of the predicted grades, ROC AUC from probabilities."""
    true, pred = _check_pair(y_true, y_pred, classes)
    if not any(g >= referable_from for g in classes) or all(g >= referable_from for g in classes):
        raise ValueError(f"referable_from={referable_from} must split the scale {list(classes)}")
    true_referable = true >= referable_from
    pred_referable = pred >= referable_from
    positives = int(true_referable.sum())
    negatives = int((~true_referable).sum())
    result: dict[str, float | int | None] = {
        "referable_from": int(referable_from),
        "positives": positives,
        "negatives": negatives,
        "sensitivity": float((pred_referable & true_referable).sum() / positives)
        if positives
        else None,
        "specificity": float((~pred_referable & ~true_referable).sum() / negatives)
        if negatives
        else None,
        "auc": None,
    }
    if proba is not None:
        scores = referable_probability(
            _check_proba(proba, true.size, classes), classes=classes, referable_from=referable_from
        )
        if positives and negatives:  # AUC is undefined with a single class present
            from sklearn.metrics import roc_auc_score

            result["auc"] = float(roc_auc_score(true_referable, scores))
    return result


def expected_calibration_error(
    y_true: npt.ArrayLike,
    proba: npt.ArrayLike,
    *,
    classes: Sequence[int] = ICDR_GRADES,
    n_bins: int = 10,
) -> float:
    """Top-label ECE: |accuracy - confidence| per equal-width confidence bin, weighted by bin size."""
    true = _as_grades(y_true, classes, "y_true")
    array = _check_proba(proba, true.size, classes)
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    confidence = array.max(axis=1)
    predicted = np.asarray(classes)[array.argmax(axis=1)]
    return _binned_calibration_error((predicted == true).astype(np.float64), confidence, n_bins)


def _binned_calibration_error(
    correct: npt.NDArray[np.float64], confidence: npt.NDArray[np.float64], n_bins: int
) -> float:
    """Sum over equal-width confidence bins of (share of rows) x |accuracy - mean confidence|."""
    # Bins are (lo, hi]; confidence 0 cannot happen with >= 2 classes summing to 1.
    bin_index = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    error = 0.0
    for b in range(n_bins):
        in_bin = bin_index == b
        if in_bin.any():
            error += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(error)


def decoded_calibration_error(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    proba: npt.ArrayLike,
    *,
    classes: Sequence[int] = ICDR_GRADES,
    n_bins: int = 10,
) -> float:
    """ECE of the grade actually reported: |accuracy - confidence| per equal-width bin, where
    the confidence is the probability of the *decoded* grade (with ordinal thresholds it is not
    always the most probable one, so the top-label ECE does not describe it)."""
    true, pred = _check_pair(y_true, y_pred, classes)
    array = _check_proba(proba, true.size, classes)
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    position = {grade: i for i, grade in enumerate(classes)}
    columns = np.asarray([position[int(g)] for g in pred], dtype=np.int64)
    confidence = array[np.arange(true.size), columns]
    return _binned_calibration_error((pred == true).astype(np.float64), confidence, n_bins)


def metrics_report(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    proba: npt.ArrayLike | None = None,
    *,
    classes: Sequence[int] = ICDR_GRADES,
    referable_from: int = REFERABLE_FROM,
) -> dict[str, Any]:
    """Everything above as a JSON-able dict (grades as string keys, ``None`` where undefined).

    Without ``proba`` (e.g. clinician vs clinician) the AUC and calibration error are ``None``.
    """
    true, pred = _check_pair(y_true, y_pred, classes)
    per_grade = per_grade_precision_recall(true, pred, classes=classes)
    report: dict[str, Any] = {
        "n": int(true.size),
        "classes": [int(c) for c in classes],
        "accuracy": accuracy(true, pred, classes=classes),
        "qwk": quadratic_weighted_kappa(true, pred, classes=classes),
        "confusion": confusion(true, pred, classes=classes).tolist(),
        "per_grade": {str(grade): values for grade, values in per_grade.items()},
        "referable": referable_metrics(
            true, pred, proba, classes=classes, referable_from=referable_from
        ),
        "ece": expected_calibration_error(true, proba, classes=classes)
        if proba is not None
        else None,
        "ece_decoded": decoded_calibration_error(true, pred, proba, classes=classes)
        if proba is not None
        else None,
    }
    return report


# Headline numbers of a report, as flat names; used to summarise folds.
HEADLINE_METRICS: tuple[str, ...] = (
    "qwk",
    "accuracy",
    "referable_sensitivity",
    "referable_specificity",
    "referable_auc",
    "ece",
)


def headline(report: Mapping[str, Any]) -> dict[str, float | None]:
    referable = report["referable"]
    return {
        "qwk": report["qwk"],
        "accuracy": report["accuracy"],
        "referable_sensitivity": referable["sensitivity"],
        "referable_specificity": referable["specificity"],
        "referable_auc": referable["auc"],
        "ece": report["ece"],
    }


def summarize(
    reports: Sequence[Mapping[str, Any]],
) -> dict[str, dict[str, float | int | None]]:
    """Mean, sample standard deviation, min and max of each headline metric across reports."""
    summary: dict[str, dict[str, float | int | None]] = {}
    for name in HEADLINE_METRICS:
        values = [headline(r)[name] for r in reports]
        present = [float(v) for v in values if v is not None and not math.isnan(v)]
        if not present:
            summary[name] = {"mean": None, "std": None, "min": None, "max": None, "n": 0}
            continue
        array = np.asarray(present)
        summary[name] = {
            "mean": float(array.mean()),
            "std": float(array.std(ddof=1)) if array.size > 1 else 0.0,
            "min": float(array.min()),
            "max": float(array.max()),
            "n": int(array.size),
        }
    return summary


# ---------------------------------------------------------------------------------------------
# The same report from aggregates: a database can count a confusion matrix and a histogram of
# scores in SQL, so a page never has to read every prediction to show these numbers.


def qwk_from_confusion(matrix: npt.ArrayLike) -> float:
    """Quadratic weighted kappa of a confusion matrix (rows true, columns predicted, scale order);
    exactly what ``quadratic_weighted_kappa`` computes from the pairs."""
    observed = np.asarray(matrix, dtype=np.float64)
    k = observed.shape[0]
    if k < 2 or observed.shape != (k, k):
        raise ValueError(
            f"a square confusion matrix of two or more grades is needed, got {observed.shape}"
        )
    positions = np.arange(k, dtype=np.float64)
    weights = (positions[:, None] - positions[None, :]) ** 2 / (k - 1) ** 2
    total = observed.sum()
    if total == 0:
        raise ValueError("an empty confusion matrix has no kappa")
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total
    expected_disagreement = float((weights * expected).sum())
    observed_disagreement = float((weights * observed).sum())
    if expected_disagreement == 0.0:
        return 1.0 if observed_disagreement == 0.0 else 0.0
    return 1.0 - observed_disagreement / expected_disagreement


def auc_from_histogram(positives: npt.ArrayLike, negatives: npt.ArrayLike) -> float | None:
    """ROC AUC from counts of positives and negatives per score bin (bins in ascending score order).

    Pairs in the same bin count as ties (one half), as scikit-learn counts equal scores: with bins
    of width 1/1000 the result differs from the exact AUC by at most half the share of pairs that
    share a bin. ``None`` when one class is absent.
    """
    pos = np.asarray(positives, dtype=np.float64)
    neg = np.asarray(negatives, dtype=np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return None
    negatives_below = np.cumsum(neg) - neg
    wins = float((pos * negatives_below).sum() + 0.5 * (pos * neg).sum())
    return wins / float(n_pos * n_neg)


def metrics_report_from_confusion(
    matrix: npt.ArrayLike,
    *,
    classes: Sequence[int] = ICDR_GRADES,
    referable_from: int = REFERABLE_FROM,
    referable_auc: float | None = None,
) -> dict[str, Any]:
    """``metrics_report`` from a confusion matrix (counted elsewhere, e.g. in SQL), with the AUC
    given separately (e.g. ``auc_from_histogram``). The calibration error needs every probability
    and is ``None`` here."""
    observed = np.asarray(matrix, dtype=np.int64)
    k = len(classes)
    if observed.shape != (k, k):
        raise ValueError(
            f"confusion must be {k}x{k} for classes {list(classes)}, got {observed.shape}"
        )
    if not any(g >= referable_from for g in classes) or all(g >= referable_from for g in classes):
        raise ValueError(f"referable_from={referable_from} must split the scale {list(classes)}")
    total = int(observed.sum())
    if total == 0:
        raise ValueError("an empty confusion matrix has no metrics")
    per_grade = {str(grade): values for grade, values in _per_grade(observed, classes).items()}
    referable = np.asarray([grade >= referable_from for grade in classes])
    positives = int(observed[referable, :].sum())
    negatives = total - positives
    true_positive = int(observed[np.ix_(referable, referable)].sum())
    true_negative = int(observed[np.ix_(~referable, ~referable)].sum())
    return {
        "n": total,
        "classes": [int(c) for c in classes],
        "accuracy": float(np.trace(observed) / total),
        "qwk": qwk_from_confusion(observed),
        "confusion": observed.tolist(),
        "per_grade": per_grade,
        "referable": {
            "referable_from": int(referable_from),
            "positives": positives,
            "negatives": negatives,
            "sensitivity": true_positive / positives if positives else None,
            "specificity": true_negative / negatives if negatives else None,
            "auc": referable_auc if positives and negatives else None,
        },
        "ece": None,
    }
