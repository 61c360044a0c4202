"""Population stability index (PSI) of a sample against a reference, with a bootstrap interval.

PSI = sum over bins of (s - r) * ln(s / r), where r and s are the shares of the reference and of
the sample in each bin. Continuous values are binned at the reference's quantiles (equal shares
of the reference per bin); categorical values (a predicted grade) use one bin per category. By
the usual rule of thumb, under 0.1 is stable, 0.1-0.25 a moderate shift, over 0.25 a major one.
A small sample inflates PSI by chance (about (bins - 1) * (1/n + 1/m) under no shift), hence the
interval, and an alert on its lower bound rather than on the point value.

Counts get half a count per bin (Jeffreys smoothing) so that a bin one side left empty does not
make ln(s / r) explode. The interval is a percentile bootstrap (both sides resampled) shifted by
the bootstrap's own bias: resampling adds noise, which PSI (never negative) turns into a higher
value, so the raw percentiles sit above the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Added to every bin's count (Jeffreys): an empty bin would make ln(s / r) infinite.
SMOOTHING = 0.5


@dataclass(frozen=True)
class PsiEstimate:
    value: float
    low: float
    high: float
    sample_size: int


def quantile_edges(reference: npt.ArrayLike, *, bins: int) -> npt.NDArray[np.float64]:
    """Inner bin edges at the reference's quantiles (duplicates removed: a mass point stays one
    bin)."""
    values = np.asarray(reference, dtype=np.float64)
    if values.size == 0:
        raise ValueError("the reference is empty")
    inner = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(inner)


def _bin_indices(
    values: npt.NDArray[np.float64], edges: npt.NDArray[np.float64] | None
) -> npt.NDArray[np.int64]:
    if edges is None:  # categorical: values are already small non-negative integers
        return values.astype(np.int64)
    return np.searchsorted(edges, values, side="right").astype(np.int64)


def _psi_from_indices(
    reference: npt.NDArray[np.int64], sample: npt.NDArray[np.int64], bins: int
) -> float:
    ref_counts = np.bincount(reference, minlength=bins) + SMOOTHING
    sample_counts = np.bincount(sample, minlength=bins) + SMOOTHING
    ref_share = ref_counts / ref_counts.sum()
    sample_share = sample_counts / sample_counts.sum()
    return float(np.sum((sample_share - ref_share) * np.log(sample_share / ref_share)))


def population_stability_index(
    reference: npt.ArrayLike,
    sample: npt.ArrayLike,
    *,
    bins: int = 5,
    categorical: bool = False,
    resamples: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
) -> PsiEstimate:
    """PSI of ``sample`` against ``reference`` and a percentile bootstrap interval (both sides
    resampled). ``categorical``: values are category indices (0..k-1), ``bins`` is ignored."""
    ref = np.asarray(reference, dtype=np.float64)
    smp = np.asarray(sample, dtype=np.float64)
    if ref.size == 0 or smp.size == 0:
        raise ValueError("PSI needs a non-empty reference and sample")
    edges = None if categorical else quantile_edges(ref, bins=bins)
    ref_idx = _bin_indices(ref, edges)
    smp_idx = _bin_indices(smp, edges)
    if categorical and (ref_idx.min() < 0 or smp_idx.min() < 0):
        raise ValueError("categorical values must be non-negative indices")
    count = int(max(ref_idx.max(), smp_idx.max())) + 1 if edges is None else edges.size + 1
    value = _psi_from_indices(ref_idx, smp_idx, count)
    rng = np.random.default_rng(seed)
    draws = np.empty(resamples)
    for i in range(resamples):
        ref_draw = ref_idx[rng.integers(0, ref_idx.size, ref_idx.size)]
        smp_draw = smp_idx[rng.integers(0, smp_idx.size, smp_idx.size)]
        draws[i] = _psi_from_indices(ref_draw, smp_draw, count)
    tail = (1 - confidence) / 2 * 100
    bias = float(draws.mean()) - value
    low, high = np.percentile(draws, [tail, 100 - tail]) - bias
    return PsiEstimate(
        value=value, low=max(0.0, float(low)), high=max(0.0, float(high)), sample_size=int(smp.size)
    )


def wilson_interval(successes: int, trials: int, *, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 % by default); (0, 1) for no trials."""
    if trials <= 0:
        return 0.0, 1.0
    share = successes / trials
    denominator = 1 + z * z / trials
    centre = (share + z * z / (2 * trials)) / denominator
    half = z * np.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / denominator
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
