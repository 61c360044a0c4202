"""Temperature scaling and decoding (mlcore.models.calibration) and their record in model artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlcore.evaluation.metrics import expected_calibration_error
from mlcore.models.calibration import apply_temperature, choose_decoding, fit_temperature, softmax


def _overconfident(n: int = 4000, temperature: float = 2.5, seed: int = 0):
    """Grades drawn from softmax(z / T): logits z are T times too confident."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, 5))
    truth = softmax(logits / temperature)
    y = np.asarray([rng.choice(5, p=row) for row in truth])
    return logits, y


def test_it_recovers_a_known_temperature():
    logits, y = _overconfident(temperature=2.5)
    assert fit_temperature(logits, y) == pytest.approx(2.5, rel=0.1)


def test_calibration_lowers_the_ece_and_never_moves_the_argmax():
    logits, y = _overconfident()
    temperature = fit_temperature(logits, y)
    before, after = softmax(logits), apply_temperature(logits, temperature)
    assert np.array_equal(before.argmax(axis=1), after.argmax(axis=1))
    ece = {
        name: expected_calibration_error(y, proba, classes=(0, 1, 2, 3, 4))
        for name, proba in (("before", before), ("after", after))
    }
    assert ece["after"] < ece["before"] / 2


def test_argmax_decoding_never_shows_a_grade_with_a_tiny_probability():
    logits, y = _overconfident(n=500)
    proba = apply_temperature(logits, fit_temperature(logits, y))
    decoding = choose_decoding(proba, y, mode="argmax", seed=0)
    shown = decoding.positions(proba)
    assert (proba[np.arange(y.size), shown] >= proba.max(axis=1) - 1e-12).all()


def test_a_head_model_records_its_temperature_and_decoding(tmp_path):
    from mlcore.models.artifact import load_artifact
    from tests.mlcore.toy_backbones import train_toy_artifact

    folder = train_toy_artifact(tmp_path / "model")
    meta = json.loads((folder / "metadata.json").read_text())
    temperature = meta["head"]["temperature"]
    assert temperature > 0
    assert meta["outputs"]["temperature"] == temperature
    assert meta["outputs"]["decoding"] == meta["head"]["decoding"]
    calibration = meta["head"]["calibration"]
    assert calibration["method"] == "temperature"
    assert calibration["n_validation"] > 0
    assert {"ece_before", "ece_after"} <= set(calibration)

    artifact = load_artifact(folder)
    assert artifact.classifier.temperature_ == pytest.approx(temperature)
    features = np.random.default_rng(0).uniform(0, 0.3, (4, 1)).astype(np.float32)
    features = np.repeat(features, 3, axis=1)
    raw = artifact.classifier._raw_proba(features)
    calibrated = artifact.classifier.predict_proba(features)
    assert np.allclose(calibrated, apply_temperature(np.log(raw), temperature), atol=1e-6)
