"""Calibration and decoding shared by the head classifier and fine-tuned networks.

- Temperature scaling (Guo et al. 2017): one scalar ``T`` divides the logits before the softmax,
  fitted by minimising the negative log-likelihood on held-out images. It never changes the
  argmax, only how confident the probabilities are, so the bars a clinician sees mean what they
  say (ECE falls) without moving a single argmax grade.
- Decoding: argmax of the calibrated probabilities, or ordinal thresholds on the expected grade
  (kept only when it beats argmax on held-out data, judged by a two-fold split of that data).

Everything is fitted on the *inner* validation split carved out of the training data, never on
images used to report a model's figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcore.evaluation.metrics import quadratic_weighted_kappa

DECODINGS = ("auto", "argmax", "ordinal")

Floats = npt.NDArray[np.float64]
Positions = npt.NDArray[np.intp]
_MIN_TEMPERATURE, _MAX_TEMPERATURE = 0.05, 20.0


def softmax(logits: npt.ArrayLike) -> Floats:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def logits_from_proba(proba: npt.ArrayLike) -> Floats:
    """Logits up to a per-row constant (all a softmax needs) of probabilities from a softmax."""
    return np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-12, 1.0))


def apply_temperature(logits: npt.ArrayLike, temperature: float) -> Floats:
    """Calibrated probabilities ``softmax(logits / T)``."""
    return softmax(np.asarray(logits, dtype=np.float64) / float(temperature))


def negative_log_likelihood(
    logits: npt.ArrayLike, y_index: npt.NDArray[np.integer[Any]], temperature: float
) -> float:
    proba = apply_temperature(logits, temperature)
    picked = proba[np.arange(y_index.size), y_index]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def fit_temperature(logits: npt.ArrayLike, y_index: npt.ArrayLike) -> float:
    """The temperature minimising the NLL of ``y_index`` (class positions) on held-out logits.

    A bounded search over log T (the NLL is smooth and unimodal in it); 1.0 when there is
    nothing to fit on.
    """
    from scipy.optimize import minimize_scalar

    logit_rows = np.asarray(logits, dtype=np.float64)
    positions = np.asarray(y_index, dtype=np.int64)
    if positions.size == 0:
        return 1.0
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logit_rows, positions, float(np.exp(log_t))),
        bounds=(np.log(_MIN_TEMPERATURE), np.log(_MAX_TEMPERATURE)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


# -- decoding -----------------------------------------------------------------------------------
def decode_ordinal(expected: npt.ArrayLike, thresholds: npt.ArrayLike) -> Positions:
    """Class positions from expected grades: position = number of thresholds below the value."""
    return np.searchsorted(np.asarray(thresholds), np.asarray(expected), side="right")


def expected_position(proba: npt.ArrayLike) -> Floats:
    """Probability-weighted mean of the class positions 0..k-1."""
    rows = np.asarray(proba)
    return np.asarray(rows @ np.arange(rows.shape[1], dtype=np.float64), dtype=np.float64)


def _qwk_positions(true: npt.ArrayLike, pred: npt.ArrayLike, k: int) -> float:
    return quadratic_weighted_kappa(true, pred, classes=tuple(range(k)))


def fit_ordinal_thresholds(
    expected: npt.ArrayLike, y_index: npt.ArrayLike, n_classes: int, *, passes: int = 3
) -> Floats:
    """Thresholds maximising QWK by coordinate search (deterministic, ordered, k-1 values)."""
    thresholds = np.arange(n_classes - 1, dtype=np.float64) + 0.5
    best = _qwk_positions(y_index, decode_ordinal(expected, thresholds), n_classes)
    for _ in range(passes):
        improved = False
        for i in range(n_classes - 1):
            low = thresholds[i - 1] if i > 0 else 0.0
            high = thresholds[i + 1] if i < n_classes - 2 else float(n_classes - 1)
            for candidate in np.linspace(low, high, 41)[1:-1]:
                trial = thresholds.copy()
                trial[i] = candidate
                score = _qwk_positions(y_index, decode_ordinal(expected, trial), n_classes)
                if score > best + 1e-12:
                    best, thresholds, improved = score, trial, True
        if not improved:
            break
    return thresholds


@dataclass
class Decoding:
    """How grades are read off calibrated probabilities: ``"argmax"``, or ``"ordinal"`` with
    ``thresholds`` on the expected grade position. ``validation_qwk``: QWK of each decoding on
    the inner validation split (None when not compared)."""

    method: str
    thresholds: Floats | None
    validation_qwk: dict[str, float] | None = None

    def positions(self, proba: npt.ArrayLike) -> Positions:
        if self.method == "ordinal" and self.thresholds is not None:
            return decode_ordinal(expected_position(proba), self.thresholds)
        return np.asarray(np.asarray(proba).argmax(axis=1), dtype=np.intp)

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "thresholds": None if self.thresholds is None else [float(t) for t in self.thresholds],
            "validation_qwk": self.validation_qwk,
        }


def choose_decoding(
    proba_val: Floats, y_val: npt.NDArray[np.int64], *, mode: str, seed: int
) -> Decoding:
    """Decoding from calibrated held-out probabilities (positions ``y_val``).

    ``"ordinal"`` always fits thresholds; ``"auto"`` keeps them only when they beat argmax on
    held-out data, and that comparison is itself cross-validated (thresholds fitted on one half
    of the validation images, scored on the other, and back) so that the thresholds are not
    judged on the data they were tuned on.
    """
    if mode not in DECODINGS:
        raise ValueError(f"decoding must be one of {DECODINGS}, got {mode!r}")
    k = proba_val.shape[1]
    if mode == "argmax" or y_val.size == 0:
        return Decoding("argmax", None)
    expected = expected_position(proba_val)
    thresholds = fit_ordinal_thresholds(expected, y_val, k)
    if mode == "ordinal":
        return Decoding("ordinal", thresholds)
    rng = np.random.default_rng(seed)
    halves = np.array_split(rng.permutation(y_val.size), 2)
    ordinal_pred = np.empty_like(y_val)
    for fit_half, score_half in ((halves[0], halves[1]), (halves[1], halves[0])):
        half_thresholds = fit_ordinal_thresholds(expected[fit_half], y_val[fit_half], k)
        ordinal_pred[score_half] = decode_ordinal(expected[score_half], half_thresholds)
    scores = {
        "argmax": _qwk_positions(y_val, proba_val.argmax(axis=1), k),
        "ordinal": _qwk_positions(y_val, ordinal_pred, k),
    }
    method = "ordinal" if scores["ordinal"] > scores["argmax"] else "argmax"
    return Decoding(method, thresholds, scores)


def output_story(
    *, decoding: str, thresholds: npt.ArrayLike | None, temperature: float
) -> dict[str, Any]:
    """What a displayed prediction means, for the pages: the probabilities are calibrated by
    ``temperature``; the grade is their argmax, or (``"ordinal"``) the number of ``thresholds``
    below the expected grade position ``sum_k k * p_k`` (show that value beside the grade)."""
    return {
        "probabilities": "calibrated (temperature scaling)"
        if temperature != 1.0
        else "uncalibrated softmax",
        "temperature": float(temperature),
        "decoding": decoding,
        "thresholds": None if thresholds is None else [float(t) for t in np.ravel(thresholds)],
        "grade_rule": "argmax of the probabilities"
        if decoding != "ordinal"
        else "thresholds on the expected grade position (sum of position x probability)",
    }
