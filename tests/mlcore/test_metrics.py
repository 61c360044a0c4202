from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix, roc_auc_score

from mlcore.evaluation.metrics import (
    accuracy,
    confusion,
    expected_calibration_error,
    metrics_report,
    per_grade_precision_recall,
    quadratic_weighted_kappa,
    referable_metrics,
    referable_probability,
    summarize,
)


@pytest.mark.parametrize("seed", range(5))
def test_qwk_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 5, 200)
    y_pred = np.clip(y_true + rng.integers(-2, 3, 200), 0, 4)
    expected = cohen_kappa_score(y_true, y_pred, weights="quadratic", labels=[0, 1, 2, 3, 4])
    assert quadratic_weighted_kappa(y_true, y_pred) == pytest.approx(expected, abs=1e-12)


def test_qwk_uses_scale_positions_not_grade_values():
    # A scale 1..3: disagreements are weighted by position on the scale, as scikit-learn does.
    y_true, y_pred = [1, 2, 3, 3, 1], [1, 3, 3, 2, 2]
    expected = cohen_kappa_score(y_true, y_pred, weights="quadratic", labels=[1, 2, 3])
    assert quadratic_weighted_kappa(y_true, y_pred, classes=(1, 2, 3)) == pytest.approx(expected)


def test_qwk_hand_computed():
    # Scale 0..2, weights (i-j)^2/4. Observed [[1,1,0],[0,1,0],[0,0,1]] (n=4): weighted
    # disagreement 1 * 1/4 = 0.25. Row sums (2,1,1), column sums (1,2,1), expected E = outer/4:
    # sum of w * E over the off-diagonal cells
    #   (0,1) 1.0/4 + (0,2) 0.5*1 + (1,0) 0.25/4 + (1,2) 0.25/4 + (2,0) 0.25*1 + (2,1) 0.5/4
    #   = 0.25 + 0.5 + 0.0625 + 0.0625 + 0.25 + 0.125 = 1.25
    # kappa = 1 - 0.25 / 1.25 = 0.8
    y_true, y_pred = [0, 0, 1, 2], [0, 1, 1, 2]
    assert quadratic_weighted_kappa(y_true, y_pred, classes=(0, 1, 2)) == pytest.approx(0.8)


def test_perfect_agreement_on_a_single_grade_is_one():
    assert quadratic_weighted_kappa([2, 2, 2], [2, 2, 2]) == 1.0


def test_confusion_and_accuracy_match_scikit_learn():
    rng = np.random.default_rng(7)
    y_true, y_pred = rng.integers(0, 5, 100), rng.integers(0, 5, 100)
    assert np.array_equal(
        confusion(y_true, y_pred), confusion_matrix(y_true, y_pred, labels=[0, 1, 2, 3, 4])
    )
    assert accuracy(y_true, y_pred) == pytest.approx(np.mean(y_true == y_pred))


def test_per_grade_precision_recall_hand_computed():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    result = per_grade_precision_recall(y_true, y_pred, classes=(0, 1, 2, 3))
    assert result[0] == {"precision": 1.0, "recall": 2 / 3, "support": 3}
    assert result[1] == {"precision": 0.5, "recall": 0.5, "support": 2}
    assert result[2] == {"precision": 0.5, "recall": 1.0, "support": 1}
    assert result[3] == {"precision": None, "recall": None, "support": 0}


def test_referable_sensitivity_specificity_hand_computed():
    # Referable = grade >= 2. True referable: indices 2,3,4 (3 positives); predicted referable
    # at 3,4,5 -> TP 2, FN 1 (index 2 predicted 1), FP 1 (index 5), TN 2 (indices 0,1).
    y_true = [0, 1, 2, 3, 4, 1]
    y_pred = [0, 0, 1, 2, 4, 2]
    result = referable_metrics(y_true, y_pred)
    assert result["sensitivity"] == pytest.approx(2 / 3)
    assert result["specificity"] == pytest.approx(2 / 3)
    assert result["positives"] == 3 and result["negatives"] == 3
    assert result["auc"] is None


def test_referable_auc_uses_summed_probabilities_of_referable_grades():
    rng = np.random.default_rng(3)
    proba = rng.dirichlet(np.ones(5), size=80)
    y_true = rng.integers(0, 5, 80)
    y_pred = proba.argmax(axis=1)
    summed = proba[:, 2:].sum(axis=1)
    assert np.allclose(referable_probability(proba), summed)
    result = referable_metrics(y_true, y_pred, proba)
    assert result["auc"] == pytest.approx(roc_auc_score(y_true >= 2, summed))


def test_expected_calibration_error_hand_computed():
    # Two bins used (n_bins=2): confidences 0.9, 0.8 (bin (0.5,1], both correct -> acc 1.0,
    # mean conf 0.85, gap 0.15) and 0.4, 0.45 (bin (0,0.5], one correct -> acc 0.5, mean conf
    # 0.425, gap 0.075). ECE = 0.5*0.15 + 0.5*0.075 = 0.1125.
    proba = np.array(
        [
            [0.9, 0.1, 0.0],
            [0.1, 0.8, 0.1],
            [0.4, 0.3, 0.3],
            [0.3, 0.25, 0.45],
        ]
    )
    y_true = [0, 1, 0, 1]
    ece = expected_calibration_error(y_true, proba, classes=(0, 1, 2), n_bins=2)
    assert ece == pytest.approx(0.1125)


def test_report_is_json_serialisable_and_complete():
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(5), size=50)
    y_true = rng.integers(0, 5, 50)
    report = metrics_report(y_true, proba.argmax(axis=1), proba)
    text = json.dumps(report)
    assert json.loads(text)["n"] == 50
    assert set(report) >= {"accuracy", "qwk", "confusion", "per_grade", "referable", "ece"}
    assert report["referable"]["auc"] is not None


def test_report_without_probabilities_serves_clinician_agreement():
    report = metrics_report([0, 1, 2, 3], [0, 1, 3, 3])
    assert report["referable"]["auc"] is None
    assert report["ece"] is None
    assert report["referable"]["sensitivity"] == 1.0


def test_bad_input_is_rejected_clearly():
    with pytest.raises(ValueError, match="not on the scale"):
        quadratic_weighted_kappa([0, 5], [0, 1])
    with pytest.raises(ValueError, match="2 grades but y_pred has 3"):
        accuracy([0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="one column per grade"):
        referable_metrics([0, 1], [0, 1], np.ones((2, 3)))


def test_summarize_gives_mean_and_sample_sd():
    reports = [metrics_report([0, 1, 2, 2], p) for p in ([0, 1, 2, 2], [0, 0, 2, 2])]
    summary = summarize(reports)
    assert summary["accuracy"]["mean"] == pytest.approx(0.875)
    assert summary["accuracy"]["std"] == pytest.approx(np.std([1.0, 0.75], ddof=1))
    assert summary["referable_auc"]["mean"] is None


def test_metrics_and_reports_import_without_tensorflow():
    code = (
        "import sys, mlcore.evaluation.metrics, mlcore.evaluation.reports, mlcore.data.splits; "
        "sys.exit(1 if 'tensorflow' in sys.modules or 'keras' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_it_gives_the_same_report_from_a_confusion_matrix_as_from_the_pairs():
    from mlcore.evaluation.metrics import confusion, metrics_report, metrics_report_from_confusion

    rng = np.random.default_rng(7)
    y_true = rng.integers(0, 5, 400)
    y_pred = np.clip(y_true + rng.integers(-1, 2, 400), 0, 4)
    from_pairs = metrics_report(y_true, y_pred)
    from_matrix = metrics_report_from_confusion(confusion(y_true, y_pred))
    for key in ("n", "accuracy", "confusion", "per_grade", "classes"):
        assert from_matrix[key] == from_pairs[key], key
    assert from_matrix["qwk"] == pytest.approx(from_pairs["qwk"], abs=1e-12)
    for key in ("positives", "negatives", "sensitivity", "specificity"):
        assert from_matrix["referable"][key] == pytest.approx(from_pairs["referable"][key]), key


def test_it_computes_the_auc_from_a_score_histogram_like_scikit_learn():
    from sklearn.metrics import roc_auc_score

    from mlcore.evaluation.metrics import auc_from_histogram

    rng = np.random.default_rng(3)
    truth = rng.random(3000) < 0.3
    scores = np.clip(rng.normal(0.35 + 0.3 * truth, 0.2), 0, 0.9999)
    bins = np.floor(scores * 1000).astype(int)
    positives = np.bincount(bins[truth], minlength=1000)
    negatives = np.bincount(bins[~truth], minlength=1000)
    assert auc_from_histogram(positives, negatives) == pytest.approx(
        roc_auc_score(truth, scores), abs=1e-3
    )
    assert auc_from_histogram([0, 0], [3, 4]) is None
