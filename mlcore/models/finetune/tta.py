"""Test-time averaging for fine-tuned networks: calibrated probabilities averaged over mirror
flips of each input, and over its augmented copies when there are some.

The cached route trains the top on mirror-flipped maps (``FinetuneConfig.map_flips``) and the
whole network on flipped images, so the flips are views the network was taught to grade alike.
Works on images (n, size, size, 3) and on the frozen bottom's maps (n, h, w, c) alike: both
flip along axes 1 (vertical) and 2 (horizontal)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
# Inputs (n, h, w, c) -> calibrated probabilities (n, k).
ProbaOf = Callable[[npt.NDArray[Any]], Floats]

ALL_FLIPS = (0, 1, 2, 3)  # bit 1: horizontal mirror, bit 2: vertical mirror


def flipped(inputs: npt.NDArray[Any], flip: int) -> npt.NDArray[Any]:
    """``inputs`` (n, h, w, c) mirrored: ``flip & 1`` horizontally, ``flip & 2`` vertically."""
    if not 0 <= flip <= 3:
        raise ValueError(f"flip must be 0..3, got {flip}")
    out = inputs[:, :, ::-1] if flip & 1 else inputs
    return out[:, ::-1] if flip & 2 else out


def averaged_proba(
    proba_of: ProbaOf,
    versions: Sequence[npt.NDArray[Any]],
    *,
    flips: Sequence[int] = ALL_FLIPS,
) -> Floats:
    """Mean of ``proba_of`` over every version of the inputs (the original first, then any
    augmented copies, each (n, h, w, c)) and every flip in ``flips``."""
    if not versions or not flips:
        raise ValueError("averaging needs at least one version and one flip")
    probas = [
        np.asarray(proba_of(np.ascontiguousarray(flipped(version, flip))), np.float64)
        for version in versions
        for flip in flips
    ]
    return np.asarray(np.mean(probas, axis=0), dtype=np.float64)
