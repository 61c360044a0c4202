from __future__ import annotations

import numpy as np
import pytest

from mlcore.evaluation.metrics import quadratic_weighted_kappa
from mlcore.models.classifier import (
    HeadClassifier,
    class_weights,
    decode_ordinal,
    expected_position,
    fit_ordinal_thresholds,
)


def _synthetic(n: int = 300, d: int = 16, classes=(0, 1, 2), seed: int = 0, noise: float = 1.0):
    """Features whose mean moves along one direction with the grade (an ordinal problem)."""
    rng = np.random.default_rng(seed)
    grades = rng.choice(classes, size=n)
    direction = rng.normal(size=d)
    position = np.searchsorted(classes, grades)
    X = rng.normal(scale=noise, size=(n, d)) + position[:, None] * direction[None, :]
    return (X * 3.0 + 10.0).astype(np.float32), grades  # unscaled on purpose


# Small batches: these sets are tiny, so an epoch is only a few steps.
FAST = {"epochs": 60, "patience": 5, "batch_size": 16}


@pytest.fixture(scope="module")
def fitted() -> tuple[HeadClassifier, np.ndarray, np.ndarray]:
    X, y = _synthetic()
    return HeadClassifier(classes=(0, 1, 2), **FAST).fit(X, y), X, y


@pytest.mark.slow
def test_fit_returns_self_and_learns(fitted):
    classifier, X, y = fitted
    assert isinstance(classifier, HeadClassifier)
    assert list(classifier.classes_) == [0, 1, 2]
    proba = classifier.predict_proba(X)
    assert proba.shape == (X.shape[0], 3)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert np.mean(classifier.predict(X) == y) > 0.85


def test_learned_attributes_end_in_underscore_and_params_are_untouched(fitted):
    classifier, X, _ = fitted
    assert classifier.get_params()["epochs"] == FAST["epochs"]
    assert classifier.classes == (0, 1, 2)  # the parameter, as given
    for name in ("model_", "scaler_mean_", "scaler_scale_", "history_", "decoding_"):
        assert hasattr(classifier, name)
    assert classifier.n_features_in_ == X.shape[1]


def test_scaler_is_fitted_on_the_training_rows_only(fitted):
    classifier, X, _ = fitted
    train = X[classifier.training_rows_]
    assert np.allclose(classifier.scaler_mean_, train.mean(axis=0), atol=1e-4)
    assert not np.allclose(classifier.scaler_mean_, X.mean(axis=0), atol=1e-6)


@pytest.mark.slow
def test_two_runs_with_the_same_seed_give_the_same_model(fitted):
    first, X, y = fitted
    second = HeadClassifier(classes=(0, 1, 2), **FAST).fit(X, y)
    for a, b in zip(first.model_.get_weights(), second.model_.get_weights(), strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(first.predict_proba(X), second.predict_proba(X))
    other = HeadClassifier(classes=(0, 1, 2), seed=7, **FAST).fit(X, y)
    assert not np.array_equal(first.predict_proba(X), other.predict_proba(X))


@pytest.mark.slow
def test_scale_is_passed_in_not_hard_coded():
    X, y = _synthetic(classes=(1, 2, 3, 4), seed=2)
    classifier = HeadClassifier(classes=(1, 2, 3, 4), **FAST).fit(X, y)
    assert set(np.unique(classifier.predict(X))) <= {1, 2, 3, 4}
    assert classifier.predict_proba(X).shape[1] == 4
    with pytest.raises(ValueError, match="not on the scale"):
        HeadClassifier(classes=(1, 2, 3), **FAST).fit(X, y)


@pytest.mark.slow
def test_early_stopping_restores_the_best_epoch():
    # Few samples, many noisy features: the validation loss turns up quickly.
    rng = np.random.default_rng(4)
    X = rng.normal(size=(160, 400)).astype(np.float32)
    y = rng.integers(0, 3, 160)
    X[:, 0] += y  # one weakly useful feature
    classifier = HeadClassifier(classes=(0, 1, 2), epochs=200, patience=5).fit(X, y)
    assert classifier.n_epochs_ < 200
    assert classifier.best_epoch_ == classifier.n_epochs_ - 5
    validation = X[classifier.validation_rows_]
    # The restored network's own softmax has the best epoch's loss...
    loss = _log_loss(classifier._raw_proba(validation), y[classifier.validation_rows_])
    assert loss == pytest.approx(min(classifier.history_["val_loss"]), rel=1e-3)
    # ...and the temperature fitted on the same split can only lower it.
    calibrated = _log_loss(classifier.predict_proba(validation), y[classifier.validation_rows_])
    assert calibrated <= loss + 1e-9


def _log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(proba[np.arange(y.size), y], 1e-7, 1.0))))


@pytest.mark.slow
def test_validation_split_keeps_groups_and_drops_variants():
    X, y = _synthetic(n=200, seed=3)
    groups = np.repeat(np.arange(100), 2)
    variant = np.zeros(200, int)
    # rows 200..399: one augmented copy of each image, same group
    X_all = np.concatenate([X, X + 0.01])
    y_all = np.concatenate([y, y])
    groups_all = np.concatenate([groups, groups])
    variant_all = np.concatenate([variant, np.ones(200, int)])
    classifier = HeadClassifier(classes=(0, 1, 2), **FAST).fit(
        X_all, y_all, groups=groups_all, variant=variant_all
    )
    val, train = classifier.validation_rows_, classifier.training_rows_
    assert val.size > 0
    assert (variant_all[val] == 0).all()
    assert not set(groups_all[val]) & set(groups_all[train])
    with pytest.raises(ValueError, match="need groups"):
        HeadClassifier(classes=(0, 1, 2), **FAST).fit(X_all, y_all, variant=variant_all)


def test_class_weights():
    y = np.array([0] * 8 + [1] * 2)
    balanced = class_weights(y, 3, "balanced")
    assert balanced == pytest.approx({0: 10 / (2 * 8), 1: 10 / (2 * 2), 2: 1.0})
    assert class_weights(y, 3, "sqrt")[1] == pytest.approx(np.sqrt(2.5))
    assert class_weights(y, 3, None) is None
    with pytest.raises(ValueError, match="class_weight"):
        class_weights(y, 3, "heavy")


def test_ordinal_thresholds_fix_a_biased_expected_grade():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 500)
    expected = y * 0.6 + 0.3 + rng.normal(0, 0.15, 500)  # compressed towards the middle
    naive = decode_ordinal(expected, np.arange(4) + 0.5)
    thresholds = fit_ordinal_thresholds(expected, y, 5)
    assert np.all(np.diff(thresholds) > 0)
    tuned = decode_ordinal(expected, thresholds)
    assert quadratic_weighted_kappa(y, tuned) > quadratic_weighted_kappa(y, naive) + 0.05
    assert np.mean(tuned == y) > 0.9


def test_expected_position():
    proba = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert np.allclose(expected_position(proba), [0.5, 2.0])


@pytest.mark.slow
def test_decoding_modes(fitted):
    _, X, y = fitted
    argmax = HeadClassifier(classes=(0, 1, 2), decoding="argmax", **FAST).fit(X, y)
    assert argmax.decoding_ == "argmax" and argmax.thresholds_ is None
    ordinal = HeadClassifier(classes=(0, 1, 2), decoding="ordinal", **FAST).fit(X, y)
    assert ordinal.decoding_ == "ordinal" and len(ordinal.thresholds_) == 2
    proba = ordinal.predict_proba(X)
    expected = decode_ordinal(expected_position(proba), ordinal.thresholds_)
    assert np.array_equal(ordinal.predict(X), np.asarray([0, 1, 2])[expected])
    with pytest.raises(ValueError, match="decoding"):
        HeadClassifier(decoding="median").fit(X, y)


def test_folded_weights_reproduce_the_probabilities(fitted):
    classifier, X, _ = fitted
    kernel, bias = classifier.effective_weights()
    # predict_proba is calibrated: softmax(logits / T), T fitted on the validation split.
    logits = (X.astype(np.float64) @ kernel + bias) / classifier.temperature_
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    assert np.allclose(proba, classifier.predict_proba(X), atol=1e-4)


def test_errors_are_clear(fitted):
    classifier, X, y = fitted
    with pytest.raises(RuntimeError, match="not fitted"):
        HeadClassifier().predict(X)
    with pytest.raises(ValueError, match="trained on 16"):
        classifier.predict_proba(X[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        HeadClassifier(classes=(0, 1, 2)).fit(np.full((10, 3), np.nan), [0] * 10)
