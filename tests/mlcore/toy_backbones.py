"""Tiny deterministic backbones and images for fast model tests.

``toy_bright``: 32 px input scaled to 0..1, a fixed 1x1 conv with ReLU that fires where a
channel is brighter than mid-grey (0.5), then 4x4 average pooling: 8x8 maps of 3 "brightness
above background" features; with ``pooling="avg"`` their global average. So a bright lesion on a
grey background lights up exactly where it was planted, which makes CAM testable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mlcore.features.backbones import BackboneSpec, available_backbones, register_backbone

TOY = "toy_bright"
TOY_OTHER = "toy_bright_alt"  # same network under another name (backbone mismatch tests)
TOY_SIZE = 32
TOY_DIM = 3
TOY_WEIGHTS_FILE = "toy_bright.npz"


def _toy_weights() -> tuple[np.ndarray, np.ndarray]:
    return np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3), np.full(3, -0.5, np.float32)


def _build(*, weights: Path | None, pooling: str | None) -> Any:
    import keras

    inputs = keras.Input((TOY_SIZE, TOY_SIZE, 3))
    x = keras.layers.Conv2D(TOY_DIM, 1, activation="relu", name="bright")(inputs)
    x = keras.layers.AveragePooling2D(4)(x)
    if pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, x)
    if weights is not None:
        with np.load(weights) as stored:
            model.get_layer("bright").set_weights([stored["kernel"], stored["bias"]])
    else:
        model.get_layer("bright").set_weights(list(_toy_weights()))
    return model


def _scale(x: Any) -> Any:
    return x / 255.0


def ensure_toy_backbones() -> None:
    for name in (TOY, TOY_OTHER):
        if name not in available_backbones():
            register_backbone(
                BackboneSpec(
                    name=name,
                    input_size=TOY_SIZE,
                    feature_dim=TOY_DIM,
                    weights_filename=TOY_WEIGHTS_FILE,
                    preprocess=_scale,
                    build=_build,
                )
            )


def write_toy_weights(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    kernel, bias = _toy_weights()
    path = folder / TOY_WEIGHTS_FILE
    np.savez(path, kernel=kernel, bias=bias)
    return path


def lesion_image(
    size: int | tuple[int, int] = TOY_SIZE,
    lesions: list[tuple[int, int]] | None = None,
    *,
    radius: int = 2,
    seed: int = 0,
) -> np.ndarray:
    """Grey (~128, like the Gaussian-filtered set) noisy image with bright discs at (row, col)."""
    height, width = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    image = np.clip(128 + rng.normal(0, 4, (height, width, 3)), 0, 255)
    rows, cols = np.ogrid[:height, :width]
    for row, col in lesions or []:
        image[(rows - row) ** 2 + (cols - col) ** 2 <= radius**2] = 250
    return image.astype(np.uint8)


def write_graded_set(
    folder: Path, n_per_grade: int = 8, grades: tuple[int, ...] = (0, 1, 2)
) -> list[tuple[Path, int]]:
    """Grade g = g bright lesions at random places; PNG files, distinct bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(123)
    items = []
    for grade in grades:
        for i in range(n_per_grade):
            lesions = [
                tuple(int(v) for v in rng.integers(4, TOY_SIZE - 4, 2)) for _ in range(grade)
            ]
            image = lesion_image(TOY_SIZE, lesions, seed=grade * 1000 + i)
            path = folder / f"g{grade}_{i:03d}.png"
            Image.fromarray(image).save(path)
            items.append((path, grade))
    return items


def train_toy_artifact(
    folder: Path,
    *,
    backbones: tuple[str, ...] = (TOY,),
    training_domain: str = "gaussian_filtered",
    n_images: int = 120,
    augmentation: dict | None = None,
) -> Path:
    """A saved model on toy features: grade 1 = one bright lesion, grade 0 = none."""
    from mlcore.features.backbones import build_backbone
    from mlcore.features.config import FeatureConfig
    from mlcore.models.artifact import save_artifact
    from mlcore.models.classifier import HeadClassifier

    ensure_toy_backbones()
    rng = np.random.default_rng(0)
    images, grades = [], []
    for i in range(n_images):
        grade = i % 2
        lesions = [tuple(int(v) for v in rng.integers(3, TOY_SIZE - 3, 2))] if grade else []
        images.append(lesion_image(TOY_SIZE, lesions, seed=i))
        grades.append(grade)
    batch = np.stack(images).astype(np.float32) / 255.0
    features = np.concatenate(
        [build_backbone(name, weights=None)(batch).numpy() for name in backbones], axis=1
    )
    classifier = HeadClassifier(classes=(0, 1), epochs=40, patience=5, batch_size=16).fit(
        features, grades
    )
    return save_artifact(
        folder,
        classifier,
        feature_config=FeatureConfig(backbones=backbones),
        training_counts={0: n_images // 2, 1: n_images - n_images // 2},
        training_domain=training_domain,
        referable_from=1,
        augmentation=augmentation,
    )
