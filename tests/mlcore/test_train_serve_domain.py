"""Train and serve the same way (issue 19, item 3): fine-tuning, its hold-out and prediction bring
every photograph into the training domain through one function (``ImageDomain.load``), so a raw
camera photograph in a training set is filtered exactly as it would be when graded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlcore.data.domain import RAW_TO_FILTERED, DomainMismatchError, ImageDomain
from mlcore.data.preprocessing import load_rgb, looks_gaussian_filtered
from mlcore.models.finetune import FinetuneConfig, train_finetuned_model
from mlcore.pipelines.predict import predict_images
from tests.mlcore.toy_backbones import TOY, ensure_toy_backbones, write_graded_set

ensure_toy_backbones()


def raw_photo(grade: int, seed: int) -> np.ndarray:
    """A camera-like photograph: black border, reddish disc, ``grade`` bright lesions."""
    rng = np.random.default_rng(seed)
    photo = np.zeros((60, 80, 3), np.uint8)
    rows, cols = np.ogrid[:60, :80]
    disc = (rows - 30) ** 2 + (cols - 40) ** 2 < 27**2
    photo[disc] = rng.normal([150, 70, 30], 8, (int(disc.sum()), 3)).clip(0, 255)
    for _ in range(grade):
        row, col = (int(v) for v in rng.integers(15, 45, 2))
        photo[(rows - row) ** 2 + (cols - col) ** 2 <= 9] = 250
    return photo


@pytest.fixture(scope="module")
def mixed_set(tmp_path_factory) -> list[tuple[Path, int]]:
    """Filtered (grey) toy images and raw photographs, half and half, grades 0..2."""
    root = tmp_path_factory.mktemp("mixed")
    items = write_graded_set(root, n_per_grade=5)
    for grade in (0, 1, 2):
        for i in range(5):
            path = root / f"raw_g{grade}_{i}.png"
            Image.fromarray(raw_photo(grade, seed=100 * grade + i)).save(path)
            items.append((path, grade))
    return items


def test_it_detects_each_photographs_domain_and_maps_raw_ones(mixed_set):
    domain = ImageDomain()
    for path, _ in mixed_set:
        raw = path.name.startswith("raw")
        assert looks_gaussian_filtered(load_rgb(path)) is not raw
        assert domain.method_for(path) == (RAW_TO_FILTERED if raw else "none")
    images, methods = domain.load([p for p, _ in mixed_set], size=32)
    assert images.shape == (len(mixed_set), 32, 32, 3)
    assert all(looks_gaussian_filtered(image) for image in images)  # all in the domain now
    raw_domain = ImageDomain(training_domain="raw", preprocessing="crop")
    with pytest.raises(DomainMismatchError, match="already Gaussian"):
        raw_domain.load([mixed_set[0][0]], size=32)


def test_training_its_hold_out_and_prediction_see_a_mixed_set_alike(mixed_set, tmp_path):
    paths = [p for p, _ in mixed_set]
    grades = [g for _, g in mixed_set]
    config = FinetuneConfig(
        backbone=TOY, top_blocks=None, epochs=1, learning_rates=(1e-2,), batch_size=8,
        classes=(0, 1, 2), variants=0,
    )  # fmt: skip
    result = train_finetuned_model(
        paths, grades, out_dir=tmp_path / "model", config=config, holdout_fraction=0.3,
        weights=None,
    )  # fmt: skip
    served = {
        p.path: p for p in predict_images(result.artifact_dir, paths, store_dir=tmp_path / "store")
    }

    # Training mapped its raw photographs as prediction maps them.
    trained = dict(zip(result.train_paths, result.train_preprocessing, strict=True))
    assert RAW_TO_FILTERED in trained.values() and "none" in trained.values()
    assert trained == {path: served[path].preprocessing for path in result.train_paths}

    # The hold-out's figures come from the same probabilities the served model gives.
    held_out = dict(zip(result.test_paths, result.test_preprocessing, strict=True))
    assert RAW_TO_FILTERED in held_out.values()
    assert held_out == {path: served[path].preprocessing for path in result.test_paths}
    assert result.holdout_proba is not None
    served_proba = np.asarray([served[path].probabilities for path in result.test_paths])
    np.testing.assert_allclose(result.holdout_proba, served_proba[:, :3], atol=1e-5)
