"""A grader's agreement with a reference standard (certification), with intervals for small sets.

Pure numpy (no Django): the certification page and any offline audit compute the same figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mlcore.evaluation.metrics import ICDR_GRADES, REFERABLE_FROM, quadratic_weighted_kappa

Z_95 = 1.959963984540054


def wilson_interval(successes: int, total: int, *, z: float = Z_95) -> tuple[float, float] | None:
    """95 % Wilson score interval of a proportion: honest at n = 20 or at 0 % / 100 %, where the
    normal approximation gives nonsense. None when there is nothing to count."""
    if total <= 0:
        return None
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Proportion:
    successes: int
    total: int

    @property
    def value(self) -> float | None:
        return self.successes / self.total if self.total else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.successes, self.total)


@dataclass(frozen=True)
class AgreementFigures:
    """A grader against the reference: ``graded`` pairs, ``ungradable`` of them called ungradable
    by the grader (a disagreement for exact agreement, left out of kappa, sensitivity and
    specificity, and counted as a referral: an ungradable photo is re-taken or referred)."""

    graded: int
    ungradable: int
    qwk: float | None
    exact: Proportion
    sensitivity: Proportion
    specificity: Proportion


def agreement_figures(
    reference: Sequence[int],
    graded: Sequence[int | None],
    *,
    classes: Sequence[int] = ICDR_GRADES,
    referable_from: int = REFERABLE_FROM,
) -> AgreementFigures:
    """``graded[i]`` is None where the grader called photo i ungradable."""
    if len(reference) != len(graded):
        raise ValueError("reference and graded must have the same length")
    pairs = [(r, g) for r, g in zip(reference, graded, strict=True) if g is not None]
    ungradable = len(reference) - len(pairs)
    exact = sum(1 for r, g in pairs if r == g)
    referable = [
        (r >= referable_from, g is None or g >= referable_from)
        for r, g in zip(reference, graded, strict=True)
    ]
    positives = [called for truth, called in referable if truth]
    negatives = [called for truth, called in referable if not truth]
    qwk = (
        quadratic_weighted_kappa([r for r, _ in pairs], [g for _, g in pairs], classes=classes)
        if pairs
        else None
    )
    return AgreementFigures(
        graded=len(reference),
        ungradable=ungradable,
        qwk=qwk,
        exact=Proportion(exact, len(reference)),
        sensitivity=Proportion(sum(positives), len(positives)),
        specificity=Proportion(sum(1 for called in negatives if not called), len(negatives)),
    )
