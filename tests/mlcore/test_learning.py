"""Tests that fail when a model learns nothing (issue 19, item 6): the head, the regression head
and fine-tuning are scored on *held-out* synthetic data with a clear signal, against a QWK floor
that a constant predictor (QWK 0) cannot reach; fine-tuning leaves its frozen layers alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from mlcore.evaluation.metrics import quadratic_weighted_kappa
from mlcore.features.backbones import BackboneSpec, available_backbones, register_backbone
from mlcore.models.classifier import HeadClassifier
from mlcore.models.finetune import FinetuneConfig, finetune_fit
from mlcore.models.regression import RegressionHead

CLASSES = (0, 1, 2)
QWK_FLOOR = 0.6  # a constant predictor scores 0; chance-level guessing about 0
LOUD = "toy_loud"  # a toy backbone whose maps count bright lesions loudly (see _build_loud)
LOUD_SIZE = 32


def features(n: int, seed: int, d: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Features whose mean moves along one fixed direction with the grade, plus noise."""
    direction = np.random.default_rng(99).normal(size=d)
    rng = np.random.default_rng(seed)
    grades = rng.choice(CLASSES, size=n)
    X = rng.normal(scale=1.0, size=(n, d)) + grades[:, None] * direction[None, :]
    return (X * 3.0 + 10.0).astype(np.float32), grades


def test_a_constant_predictor_does_not_reach_the_floor():
    _, y = features(200, seed=1)
    assert quadratic_weighted_kappa(y, np.zeros_like(y), classes=CLASSES) < QWK_FLOOR


@pytest.mark.parametrize(
    "model",
    [
        HeadClassifier(classes=CLASSES, epochs=40, patience=5, batch_size=16),
        HeadClassifier(classes=CLASSES, epochs=40, patience=5, batch_size=16, label_smoothing=0.1),
        RegressionHead(classes=CLASSES),
    ],
    ids=["head", "head-label-smoothing", "regression"],
)
def test_heads_grade_held_out_images_above_the_floor(model: Any):
    X_train, y_train = features(240, seed=2)
    X_test, y_test = features(150, seed=3)
    model.fit(X_train, y_train)
    qwk = quadratic_weighted_kappa(y_test, model.predict(X_test), classes=CLASSES)
    assert qwk > QWK_FLOOR
    proba = model.predict_proba(X_test)
    assert proba.shape == (150, 3) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def _build_loud(*, weights: Any, pooling: str | None) -> Any:
    """relu(20 * x - 10) per channel (x in 0..1): ~0 on grey background, ~9.6 on a bright lesion;
    then 4x4 average pooling (8x8 maps)."""
    import keras

    inputs = keras.Input((LOUD_SIZE, LOUD_SIZE, 3))
    x = keras.layers.Conv2D(3, 1, activation="relu", name="bright")(inputs)
    x = keras.layers.AveragePooling2D(4, name="pool4")(x)
    if pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, x)
    kernel = (20 * np.eye(3, dtype=np.float32)).reshape(1, 1, 3, 3)
    model.get_layer("bright").set_weights([kernel, np.full(3, -10.0, np.float32)])
    return model


def _loud_backbone() -> None:
    if LOUD not in available_backbones():
        register_backbone(
            BackboneSpec(
                name=LOUD, input_size=LOUD_SIZE, feature_dim=3, weights_filename="none.npz",
                preprocess=lambda x: x / 255.0, build=_build_loud,
            )
        )  # fmt: skip


def lesion_set(folder, n_per_grade: int, seed: int) -> tuple[list, list[int]]:
    """Grey noisy images with ``grade`` bright discs (radius 4) at random places."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, cols = np.ogrid[:LOUD_SIZE, :LOUD_SIZE]
    paths, grades = [], []
    for grade in CLASSES:
        for i in range(n_per_grade):
            image = np.clip(128 + rng.normal(0, 4, (LOUD_SIZE, LOUD_SIZE, 3)), 0, 255)
            for _ in range(grade):
                r, c = rng.integers(5, LOUD_SIZE - 5, 2)
                image[(rows - r) ** 2 + (cols - c) ** 2 <= 16] = 250
            path = folder / f"g{grade}_{i:03d}.png"
            Image.fromarray(image.astype(np.uint8)).save(path)
            paths.append(path)
            grades.append(grade)
    return paths, grades


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    _loud_backbone()
    root = tmp_path_factory.mktemp("learning")
    paths, grades = lesion_set(root / "train", n_per_grade=14, seed=5)
    config = FinetuneConfig(
        backbone=LOUD, top_blocks=None, cut_layer="pool4", epochs=12, learning_rates=(0.1,),
        batch_size=8, classes=CLASSES, variants=0, dropout=0.0,
    )  # fmt: skip
    result = finetune_fit(
        paths, grades, config=config, checkpoint_dir=root / "checkpoints", weights=None
    )
    return root, result


def test_fine_tuning_grades_held_out_images_above_the_floor(finetuned):
    root, result = finetuned
    from mlcore.data.domain import ImageDomain

    paths, grades = lesion_set(root / "test", n_per_grade=12, seed=6)
    images, _ = ImageDomain().load(paths, size=LOUD_SIZE)
    predicted = result.model.predict(images)
    assert quadratic_weighted_kappa(grades, predicted, classes=CLASSES) > QWK_FLOOR


def test_fine_tuning_leaves_the_frozen_layers_unchanged(finetuned):
    _, result = finetuned
    network = result.model.network_
    trained = network.get_layer("bright").get_weights()
    fresh = _build_loud(weights=None, pooling=None).get_layer("bright").get_weights()
    for after, before in zip(trained, fresh, strict=True):
        np.testing.assert_array_equal(after, before)
    # ...while the layers above the cut did move away from their initial weights.
    logits = network.get_layer("ft_logits").get_weights()[0]
    assert np.abs(logits).max() > 1.0
