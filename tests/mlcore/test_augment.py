from __future__ import annotations

import numpy as np
import pytest

from mlcore.data.augment import AugmentConfig, augment_batch, make_augment_transform

SHA = "ab" * 32
NO_CHANGE = AugmentConfig(
    rotation_degrees=0, width_shift=0, height_shift=0, shear=0, zoom=0, horizontal_flip=False
)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((48, 40, 3)) * 255).astype(np.float32)


def test_defaults_are_the_original_recipe():
    config = AugmentConfig()
    assert (config.rotation_degrees, config.width_shift, config.height_shift) == (40, 0.2, 0.2)
    assert (config.shear, config.zoom, config.horizontal_flip, config.fill_mode) == (
        0.2,
        0.2,
        True,
        "nearest",
    )


def test_a_variant_is_the_same_picture_every_time(image):
    first = make_augment_transform(AugmentConfig(), seed=2017)(image, f"{SHA}#v3").numpy()
    again = make_augment_transform(AugmentConfig(), seed=2017)(image, f"{SHA}#v3").numpy()
    assert np.array_equal(first, again)
    assert first.shape == image.shape
    assert not np.allclose(first, image)


def test_variants_and_seeds_differ(image):
    transform = make_augment_transform(AugmentConfig(), seed=2017)
    v1 = transform(image, f"{SHA}#v1").numpy()
    v2 = transform(image, f"{SHA}#v2").numpy()
    other_seed = make_augment_transform(AugmentConfig(), seed=1)(image, f"{SHA}#v1").numpy()
    assert not np.allclose(v1, v2)
    assert not np.allclose(v1, other_seed)


def test_variant_zero_is_the_original_image(image):
    out = make_augment_transform(AugmentConfig(), seed=2017)(image, SHA).numpy()
    assert np.array_equal(out, image)


def test_zero_ranges_change_nothing(image):
    out = make_augment_transform(NO_CHANGE)(image, f"{SHA}#v5").numpy()
    assert np.allclose(out, image, atol=1e-3)


def test_flip_only_mirrors_some_variants(image):
    flip_only = AugmentConfig(
        rotation_degrees=0, width_shift=0, height_shift=0, shear=0, zoom=0, horizontal_flip=True
    )
    transform = make_augment_transform(flip_only)
    outcomes = []
    for variant in range(1, 13):
        out = transform(image, f"{SHA}#v{variant}").numpy()
        mirrored = np.allclose(out, image[:, ::-1], atol=1e-3)
        assert mirrored or np.allclose(out, image, atol=1e-3)
        outcomes.append(mirrored)
    assert any(outcomes) and not all(outcomes)


def test_width_shift_moves_content_sideways_with_nearest_fill():
    image = np.zeros((20, 20, 3), np.float32)
    image[:, 10] = 255.0  # one bright column
    config = AugmentConfig(
        rotation_degrees=0, width_shift=0.25, height_shift=0, shear=0, zoom=0, horizontal_flip=False
    )
    # stateless_uniform with seed (1, 2) draws 0.9962 for the width shift: (2u - 1) * 0.25 * 20
    # = +4.98 px in input coordinates (ImageDataGenerator's convention), so the column moves
    # from 10 to ~5.
    out = augment_batch(image[None], np.array([[1, 2]]), config).numpy()[0]
    assert int(np.argmax(out[10, :, 0])) == 5
    assert out[10, 5, 0] > 200
    assert np.allclose(out[:, :, 0], out[:1, :, 0])  # rows untouched: a pure horizontal shift
    assert np.all(out[:, :, 0].max(axis=0)[[0, 19]] < 1)  # edges filled with nearest (black)


def test_transform_runs_inside_a_tf_function_on_string_tensors(image):
    import tensorflow as tf

    transform = make_augment_transform(AugmentConfig(), seed=2017)
    graph = tf.function(lambda img, key: transform(img, key))
    eager = transform(image, f"{SHA}#v4").numpy()
    traced = graph(tf.constant(image), tf.constant(f"{SHA}#v4")).numpy()
    assert np.array_equal(eager, traced)


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="fill_mode"):
        AugmentConfig(fill_mode="mirror")
    with pytest.raises(ValueError, match="zoom"):
        AugmentConfig(zoom=1.5)
