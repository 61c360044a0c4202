from __future__ import annotations

import numpy as np
import pytest

from mlcore.evaluation.intervals import metric_intervals, paired_qwk_difference
from mlcore.evaluation.metrics import metrics_report

rng = np.random.default_rng(11)
TRUTH = rng.integers(0, 5, 400)
GOOD = np.where(rng.random(400) < 0.85, TRUTH, np.clip(TRUTH + 1, 0, 4))
POOR = np.where(rng.random(400) < 0.45, TRUTH, np.clip(TRUTH + rng.integers(-2, 3, 400), 0, 4))


def test_each_interval_holds_its_point_estimate_and_is_reproducible():
    proba = np.eye(5)[GOOD] * 0.8 + 0.04
    report = metrics_report(TRUTH, GOOD, proba)
    intervals = metric_intervals(TRUTH, GOOD, proba, n_resamples=300)
    for name, value in (
        ("qwk", report["qwk"]),
        ("accuracy", report["accuracy"]),
        ("referable_sensitivity", report["referable"]["sensitivity"]),
        ("referable_specificity", report["referable"]["specificity"]),
        ("referable_auc", report["referable"]["auc"]),
        ("ece", report["ece"]),
    ):
        low, high = intervals[name]
        assert low <= value <= high, name
        assert high - low < 0.2, name
    assert metric_intervals(TRUTH, GOOD, proba, n_resamples=300) == intervals


def test_a_small_sample_gets_a_wider_interval():
    small = metric_intervals(TRUTH[:40], GOOD[:40], n_resamples=300)["qwk"]
    large = metric_intervals(TRUTH, GOOD, n_resamples=300)["qwk"]
    assert small[1] - small[0] > large[1] - large[0]


def test_the_paired_comparison_says_better_worse_or_indistinguishable():
    better = paired_qwk_difference(TRUTH, POOR, GOOD, n_resamples=300)
    assert better["verdict"] == "better" and better["interval"][0] > 0
    assert better["difference"] == pytest.approx(
        metrics_report(TRUTH, GOOD)["qwk"] - metrics_report(TRUTH, POOR)["qwk"]
    )
    assert paired_qwk_difference(TRUTH, GOOD, POOR, n_resamples=300)["verdict"] == "worse"
    same = paired_qwk_difference(TRUTH, GOOD, GOOD, n_resamples=300)
    assert same["verdict"] == "indistinguishable" and same["difference"] == 0.0
    with pytest.raises(ValueError, match="one grade per image"):
        paired_qwk_difference(TRUTH, GOOD[:-1], GOOD)


def test_resampling_whole_patients_widens_the_interval_of_correlated_eyes():
    # Each patient's two eyes carry the same outcome: 200 independent units, not 400.
    truth = np.repeat(TRUTH[:200], 2)
    pred = np.repeat(POOR[:200], 2)
    patients = np.repeat(np.arange(200), 2)
    by_image = metric_intervals(truth, pred, n_resamples=300)["qwk"]
    by_patient = metric_intervals(truth, pred, n_resamples=300, groups=patients)["qwk"]
    assert by_patient[1] - by_patient[0] > 1.2 * (by_image[1] - by_image[0])
    paired = paired_qwk_difference(truth, pred, np.repeat(GOOD[:200], 2), groups=patients)
    assert paired["resampled"] == "patients" and paired["verdict"] == "better"


def test_confusion_intervals_contain_the_figures_and_narrow_with_more_images():
    from mlcore.evaluation.intervals import _qwk_of_matrices, confusion_intervals
    from mlcore.evaluation.metrics import quadratic_weighted_kappa

    small = np.array(
        [[6, 1, 0, 0, 0], [1, 2, 1, 0, 0], [0, 1, 3, 1, 0], [0, 0, 1, 2, 0], [0, 0, 0, 1, 2]]
    )
    true = np.repeat(np.repeat(np.arange(5), 5), small.ravel())
    pred = np.repeat(np.tile(np.arange(5), 5), small.ravel())
    qwk = quadratic_weighted_kappa(true, pred, classes=(0, 1, 2, 3, 4))
    assert np.isclose(_qwk_of_matrices(small[None].astype(float))[0], qwk)

    narrow_at = confusion_intervals(small * 20, referable_position=2)
    wide_at = confusion_intervals(small, referable_position=2)
    for key in ("qwk", "accuracy", "sensitivity", "specificity"):
        low, high = wide_at[key]
        assert low < high
        assert (narrow_at[key][1] - narrow_at[key][0]) < (high - low), key
    assert wide_at["qwk"][0] <= qwk <= wide_at["qwk"][1]
    accuracy = np.trace(small) / small.sum()
    assert wide_at["accuracy"][0] <= accuracy <= wide_at["accuracy"][1]
    referable = small[2:]
    sensitivity = referable[:, 2:].sum() / referable.sum()
    assert wide_at["sensitivity"][0] <= sensitivity <= wide_at["sensitivity"][1]
