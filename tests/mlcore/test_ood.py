from __future__ import annotations

import numpy as np
import pytest

from mlcore.models.ood import OOD_FILE, FeatureDistance, ood_fit_save, ood_load


def _training(rng: np.random.Generator, n: int = 400, dim: int = 64) -> np.ndarray:
    basis = rng.normal(size=(8, dim))
    return rng.normal(size=(n, 8)) @ basis + 0.1 * rng.normal(size=(n, dim))


def test_the_threshold_keeps_the_quantile_of_new_in_domain_rows_inside():
    rng = np.random.default_rng(0)
    X = _training(rng, n=1400)
    scorer = FeatureDistance(quantile=0.95).fit(X[:400])
    inside = scorer.score(X[400:]) <= 1.0
    assert 0.90 <= inside.mean() <= 0.99


def test_rows_off_the_training_subspace_or_far_along_it_score_above_one():
    rng = np.random.default_rng(1)
    X = _training(rng)
    scorer = FeatureDistance().fit(X)
    off_subspace = X[:20] + 1.0 * rng.normal(size=(20, X.shape[1]))
    far_along = X[:20] * 6
    assert (scorer.score(off_subspace) > 1).all()
    assert (scorer.score(far_along) > 1).all()


def test_it_is_stored_in_the_model_folder_and_loads_to_the_same_scores(tmp_path):
    rng = np.random.default_rng(2)
    X = _training(rng)
    fitted = ood_fit_save(tmp_path, X, np.zeros(len(X), np.int64), None)
    assert fitted is not None and (tmp_path / OOD_FILE).is_file()
    loaded = ood_load(tmp_path)
    assert loaded is not None
    np.testing.assert_allclose(loaded.score(X[:5]), fitted.score(X[:5]))
    assert loaded.summary()["threshold"] == pytest.approx(fitted.threshold_)


def test_too_few_images_store_nothing_and_a_folder_without_it_loads_none(tmp_path):
    assert ood_fit_save(tmp_path, np.zeros((5, 4)), np.zeros(5), None) is None
    assert ood_load(tmp_path) is None


def test_it_fits_on_the_given_rows_only_and_caps_their_number(tmp_path, monkeypatch):
    import mlcore.models.ood as ood

    rng = np.random.default_rng(4)
    X = _training(rng, n=300)
    fitted = ood_fit_save(tmp_path, X, np.zeros(len(X), np.int64), None, rows=np.arange(100))
    assert fitted is not None and fitted.n_fit_ + fitted.n_check_ == 100
    monkeypatch.setattr(ood, "MAX_FIT_ROWS", 50)
    capped = ood_fit_save(tmp_path, X, np.zeros(len(X), np.int64), None)
    assert capped is not None and capped.n_fit_ + capped.n_check_ == 50
