"""The library parts the recipe search added (issue 19): test-time flip averaging, the
cumulative-logit link of the regression head, label-smoothing settings."""

from __future__ import annotations

import numpy as np
import pytest

from mlcore.models.classifier import HeadClassifier
from mlcore.models.finetune import FinetuneConfig
from mlcore.models.finetuned import averaged_proba, flipped
from mlcore.models.regression import cumulative_logit_proba, fit_cumulative_logit


def left_heavy_proba(inputs: np.ndarray) -> np.ndarray:
    """P(class 1) = share of the brightness in the left half (a view-dependent 'model')."""
    left = inputs[:, :, : inputs.shape[2] // 2].sum(axis=(1, 2, 3))
    share = left / inputs.sum(axis=(1, 2, 3))
    return np.stack([1 - share, share], axis=1)


def test_flips_mirror_the_rows_and_columns():
    x = np.arange(2 * 3 * 4 * 1).reshape(2, 3, 4, 1)
    assert np.array_equal(flipped(x, 0), x)
    assert np.array_equal(flipped(x, 1), x[:, :, ::-1])
    assert np.array_equal(flipped(x, 2), x[:, ::-1])
    assert np.array_equal(flipped(x, 3), x[:, ::-1, ::-1])
    with pytest.raises(ValueError, match="0..3"):
        flipped(x, 4)


def test_averaging_over_flips_and_copies_cancels_what_a_mirror_changes():
    rng = np.random.default_rng(0)
    images = rng.uniform(1, 2, (5, 6, 6, 3))
    images[:, :, :3] *= 3  # bright on the left
    assert (left_heavy_proba(images)[:, 1] > 0.6).all()
    averaged = averaged_proba(left_heavy_proba, [images])
    np.testing.assert_allclose(averaged, 0.5)
    copy = rng.uniform(1, 2, images.shape)
    both = averaged_proba(left_heavy_proba, [images, copy], flips=(0,))
    expected = (left_heavy_proba(images) + left_heavy_proba(copy)) / 2
    np.testing.assert_allclose(both, expected)
    with pytest.raises(ValueError, match="at least one"):
        averaged_proba(left_heavy_proba, [])


def test_the_cumulative_logit_link_gives_ordered_probabilities_and_fits_scores():
    proba = cumulative_logit_proba(np.array([-1.0, 0.0, 1.0, 3.0]), [0.5, 1.5], 0.3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(proba.argmax(axis=1)) == [0, 0, 1, 2]
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 600)
    scores = y + rng.normal(0, 0.3, y.size)
    cuts, scale = fit_cumulative_logit(scores, y, 3)
    assert cuts[0] == pytest.approx(0.5, abs=0.15) and cuts[1] == pytest.approx(1.5, abs=0.15)
    assert 0 < scale < 0.5


def test_label_smoothing_must_be_a_share_below_one():
    with pytest.raises(ValueError, match="label_smoothing"):
        FinetuneConfig(label_smoothing=1.0)
    assert FinetuneConfig(label_smoothing=0.1).as_dict()["label_smoothing"] == 0.1
    with pytest.raises(ValueError, match="label_smoothing"):
        HeadClassifier(label_smoothing=-0.1).fit(np.zeros((4, 2)), [0, 1, 0, 1])
