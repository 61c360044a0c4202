from __future__ import annotations

import numpy as np
import pytest

from mlcore.data.domain import (
    RAW_TO_FILTERED,
    filter_like_training,
    input_geometry,
    preprocess_for,
)
from mlcore.data.preprocessing import load_rgb, looks_gaussian_filtered


def test_filter_gives_the_square_grey_high_pass_picture_of_the_training_set():
    rng = np.random.default_rng(0)
    photo = np.zeros((300, 400, 3), np.uint8)  # black camera border around a reddish disc
    rows, cols = np.ogrid[:300, :400]
    disc = (rows - 150) ** 2 + (cols - 200) ** 2 < 140**2
    photo[disc] = (rng.normal([150, 70, 30], 10, (int(disc.sum()), 3))).clip(0, 255)
    out = filter_like_training(photo, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert looks_gaussian_filtered(out)
    assert not looks_gaussian_filtered(photo)
    assert np.array_equal(preprocess_for(photo, RAW_TO_FILTERED, 224), out)
    assert preprocess_for(photo, "none", 64).shape == (64, 64, 3)
    with pytest.raises(LookupError, match="raw_to_filtered"):
        preprocess_for(photo, "sharpen", 64)


def test_input_geometry_stretches_for_raw_photos_and_pads_otherwise():
    image = np.zeros((100, 200, 3), np.uint8)
    image[10:90, 50:150] = 200
    box, window = input_geometry(image, RAW_TO_FILTERED, 224)
    assert box == (10, 90, 50, 150) and window == (0, 224, 0, 224)
    box, window = input_geometry(image, "none", 224)
    assert box == (0, 100, 0, 200) and window == (56, 112, 0, 224)


@pytest.mark.slow
def test_filtered_raw_photos_land_among_the_training_images_in_feature_space(
    fundus_dataset_dir, raw_fundus_dir, weights_dir
):
    """The point of the filter: MobileNetV2 features of filtered raw photographs are as close to
    the training images as those are to each other (nearest-neighbour distance), and as typical
    (median |z| under the training set's standardisation). Measured: photos 16.5 median / 19.6
    max vs training 11.9 / 20.0; Ben Graham at sigma 10 px gives 25.4 / 28.2."""
    from mlcore.features.config import FeatureConfig
    from mlcore.features.extraction import compute_features

    config = FeatureConfig(backbones=("mobilenet_v2",))
    training = sorted(fundus_dataset_dir.glob("*/*.jpg"))[::70]
    X = compute_features([load_rgb(p) for p in training], config=config, weights_dir=weights_dir)
    photos = sorted(raw_fundus_dir.glob("*.jpg"))
    filtered = [filter_like_training(load_rgb(p, min_size=400), 224) for p in photos]
    P = compute_features(filtered, config=config, weights_dir=weights_dir)

    def nearest(A: np.ndarray, B: np.ndarray) -> np.ndarray:
        distances = np.sqrt(((A[:, None] - B[None]) ** 2).sum(axis=-1))
        distances[distances == 0] = np.inf  # an image is not its own neighbour
        return distances.min(axis=1)

    assert nearest(P, X).max() < 1.1 * nearest(X, X).max()
    mean, std = X.mean(axis=0), X.std(axis=0) + 1e-6
    typical = np.median(np.abs((X - mean) / std), axis=1)
    assert np.median(np.abs((P - mean) / std), axis=1).max() < 1.1 * typical.max()
