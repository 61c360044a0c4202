from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mlcore.models.artifact import load_artifact
from mlcore.pipelines.cam import class_activation_map, render_overlay
from tests.mlcore.toy_backbones import (
    TOY,
    TOY_OTHER,
    ensure_toy_backbones,
    lesion_image,
    train_toy_artifact,
)

ensure_toy_backbones()


@pytest.fixture(scope="module")
def lesion_model(tmp_path_factory):
    """Grade 1 = one bright lesion, grade 0 = none; features of two toy backbones concatenated
    (so the CAM must take each backbone's slice of the kernel)."""
    folder = tmp_path_factory.mktemp("cam") / "model"
    return load_artifact(train_toy_artifact(folder, backbones=(TOY, TOY_OTHER)))


@pytest.mark.parametrize(("shape", "lesion"), [((32, 32), (8, 22)), ((40, 30), (30, 9))])
def test_cam_has_the_image_shape_and_peaks_on_the_planted_lesion(
    lesion_model, tmp_path, shape, lesion
):
    path = tmp_path / "lesion.png"
    Image.fromarray(lesion_image(shape, [lesion], radius=3, seed=99)).save(path)
    result = class_activation_map(lesion_model, path, grade=1, weights=None)
    assert result.cam.shape == shape
    assert result.cam.dtype == np.float32
    assert result.cam.min() >= 0.0 and result.cam.max() == pytest.approx(1.0)
    peak = np.unravel_index(np.argmax(result.cam), shape)
    assert abs(peak[0] - lesion[0]) <= 3 and abs(peak[1] - lesion[1]) <= 3
    # far from the lesion the map is low
    far = (shape[0] - 1 - lesion[0], shape[1] - 1 - lesion[1])
    assert result.cam[far] < 0.3
    assert result.predicted_grade == 1


def test_cam_defaults_to_the_predicted_grade(lesion_model, tmp_path):
    path = tmp_path / "healthy.png"
    Image.fromarray(lesion_image(32, [], seed=5)).save(path)
    result = class_activation_map(lesion_model, path, weights=None)
    assert result.grade == result.predicted_grade == 0
    assert result.probabilities[0] > 0.5
    with pytest.raises(ValueError, match="not on the model's scale"):
        class_activation_map(lesion_model, path, grade=4, weights=None)


def test_overlay_png(tmp_path):
    image = lesion_image((60, 80), [(30, 40)], seed=1)
    cam = np.zeros((60, 80), np.float32)
    cam[25:35, 35:45] = 1.0
    out = render_overlay(image, cam, tmp_path / "overlay.png")
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == (80, 60)
        pixels = np.asarray(png.convert("RGB")).astype(int)
    assert not np.array_equal(pixels[30, 40], pixels[2, 2])  # hot spot coloured differently
    small = render_overlay(image, cam, tmp_path / "small.png", max_side=40)
    with Image.open(small) as png:
        assert png.size == (40, 30)
    with pytest.raises(ValueError, match="does not match"):
        render_overlay(image, cam[:10], tmp_path / "bad.png")
