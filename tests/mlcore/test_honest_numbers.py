"""Honest-number leftovers of issue 19 (item 5) in mlcore: the decoded grade's calibration, and
bootstrap intervals that survive a few undefined resamples and say how many there were."""

from __future__ import annotations

import numpy as np
import pytest

from mlcore.evaluation.intervals import metric_intervals
from mlcore.evaluation.metrics import (
    decoded_calibration_error,
    expected_calibration_error,
    metrics_report,
)


def test_the_decoded_grades_calibration_is_reported_beside_the_top_labels():
    """Ordinal decoding reports grade 1 where grade 0 is the most probable: the top-label ECE
    (grade 0 at 0.5, always wrong) is 0.5, but the reported grade (1 at 0.3, always right) is
    off by 0.7."""
    proba = np.tile([0.5, 0.3, 0.2], (10, 1))
    truth = np.ones(10, np.int64)
    decoded = np.ones(10, np.int64)
    classes = (0, 1, 2)
    assert expected_calibration_error(truth, proba, classes=classes) == pytest.approx(0.5)
    assert decoded_calibration_error(truth, decoded, proba, classes=classes) == pytest.approx(0.7)
    report = metrics_report(truth, decoded, proba, classes=classes)
    assert report["ece_decoded"] == pytest.approx(0.7)
    assert metrics_report(truth, decoded, classes=classes)["ece_decoded"] is None


def test_a_few_undefined_resamples_are_dropped_and_counted():
    """Two referable images among 30: about one resample in eight has none, so no AUC. The
    interval comes from the others, and the count of dropped resamples is given."""
    rng = np.random.default_rng(0)
    truth = np.zeros(30, np.int64)
    truth[[3, 17]] = 3
    proba = rng.dirichlet(np.ones(5), 30)
    proba[truth == 3, 3] += 2.0
    proba /= proba.sum(axis=1, keepdims=True)
    pred = proba.argmax(axis=1)
    intervals = metric_intervals(truth, pred, proba, n_resamples=400)
    assert intervals["referable_auc"] is not None
    low, high = intervals["referable_auc"]
    assert 0.0 <= low <= high <= 1.0
    dropped = intervals["undefined_resamples"]["referable_auc"]
    assert 20 < dropped < 120  # (28/30)^30 ~ 13 % of 400
    assert "qwk" not in intervals["undefined_resamples"]


def test_an_interval_with_mostly_undefined_resamples_is_refused():
    truth = np.zeros(30, np.int64)  # no referable image: no resample has an AUC
    proba = np.full((30, 5), 0.2)
    intervals = metric_intervals(truth, np.zeros(30, np.int64), proba, n_resamples=200)
    assert intervals["referable_auc"] is None


def test_review_intervals_resample_patients_not_images():
    """40 patients with 4 eyes/visits each, all graded alike within a patient: resampling the
    160 images as if independent understates the spread; resampling patients does not."""
    from mlcore.evaluation.intervals import confusion_intervals, patient_confusion_intervals

    rng = np.random.default_rng(3)
    k = 3
    matrices = np.zeros((40, k, k), np.int64)
    for p in range(40):
        true = p % k
        predicted = true if rng.random() < 0.7 else (true + 1) % k
        matrices[p, true, predicted] = 4
    by_patient = patient_confusion_intervals(matrices, referable_position=2, resamples=500)
    by_image = confusion_intervals(matrices.sum(axis=0), referable_position=2)
    for name in ("qwk", "accuracy"):
        patient_width = by_patient[name][1] - by_patient[name][0]
        image_width = by_image[name][1] - by_image[name][0]
        assert patient_width > 1.5 * image_width
    pooled = matrices.sum(axis=0)
    accuracy = np.trace(pooled) / pooled.sum()
    assert by_patient["accuracy"][0] <= accuracy <= by_patient["accuracy"][1]
    assert patient_confusion_intervals(matrices[:1], referable_position=2)["qwk"] is None
