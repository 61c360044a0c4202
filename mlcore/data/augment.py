"""Random affine augmentation as TensorFlow ops (runs on a GPU when the worker has one).

Defaults are the original recipe's ``ImageDataGenerator`` settings: rotation 40 degrees, width and
height shift 0.2, shear 0.2, zoom 0.2, horizontal flip, ``nearest`` fill. The transform is composed
exactly like Keras 2's ``ImageDataGenerator.random_transform`` (rotation . shift . shear . zoom about
the image centre, then a coin-flip mirror) but each image's parameters come from a *stateless* RNG
seeded with (seed, hash of the feature key), so variant ``k`` of an image is the same picture on
every run, every machine and in any batch order.

Variant 0 is the original image: keys without a ``#v<k>`` suffix pass through unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_AUGMENT_SEED = 2017


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges; ``variants`` augmented copies per training image (0 = none).

    ``shear`` is an angle in radians, as in Keras 2.0's ImageDataGenerator that the 2017 recipe
    used (later Keras versions read the same number as degrees, which makes it almost a no-op).
    """

    rotation_degrees: float = 40.0
    width_shift: float = 0.2
    height_shift: float = 0.2
    shear: float = 0.2
    zoom: float = 0.2
    horizontal_flip: bool = True
    fill_mode: str = "nearest"
    variants: int = 0

    def __post_init__(self) -> None:
        if self.fill_mode not in _FILL_MODES:
            raise ValueError(
                f"fill_mode must be one of {sorted(_FILL_MODES)}, got {self.fill_mode!r}"
            )
        for name in ("rotation_degrees", "width_shift", "height_shift", "shear", "zoom"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.zoom >= 1:
            raise ValueError("zoom must be < 1 (zoom factors are drawn from [1 - zoom, 1 + zoom])")
        if self.variants < 0:
            raise ValueError("variants must be >= 0")


_FILL_MODES = {"nearest": "NEAREST", "reflect": "REFLECT", "wrap": "WRAP", "constant": "CONSTANT"}


def _transform_rows(params: Any, height: Any, width: Any, config: AugmentConfig) -> Any:
    """Projective transform vectors (N, 8) mapping output pixels to input pixels."""
    import tensorflow as tf

    u = params * 2.0 - 1.0  # uniform in [-1, 1)
    theta = u[:, 0] * (config.rotation_degrees * math.pi / 180.0)
    # As in Keras 2: "tx" shifts rows (height), "ty" shifts columns (width).
    shift_rows = u[:, 1] * config.height_shift * height
    shift_cols = u[:, 2] * config.width_shift * width
    shear = u[:, 3] * config.shear
    zoom_rows = 1.0 + u[:, 4] * config.zoom
    zoom_cols = 1.0 + u[:, 5] * config.zoom
    one, zero = tf.ones_like(theta), tf.zeros_like(theta)

    def matrix(rows: list[list[Any]]) -> Any:
        return tf.stack([tf.stack(row, axis=-1) for row in rows], axis=-2)  # (N, 3, 3)

    rotation = matrix(
        [
            [tf.cos(theta), -tf.sin(theta), zero],
            [tf.sin(theta), tf.cos(theta), zero],
            [zero, zero, one],
        ]
    )
    shift = matrix([[one, zero, shift_rows], [zero, one, shift_cols], [zero, zero, one]])
    shear_m = matrix([[one, -tf.sin(shear), zero], [zero, tf.cos(shear), zero], [zero, zero, one]])
    zoom = matrix([[zoom_rows, zero, zero], [zero, zoom_cols, zero], [zero, zero, one]])
    centre_r, centre_c = height / 2.0 - 0.5, width / 2.0 - 0.5
    to_centre = matrix(
        [[one, zero, centre_r * one], [zero, one, centre_c * one], [zero, zero, one]]
    )
    from_centre = matrix(
        [[one, zero, -centre_r * one], [zero, one, -centre_c * one], [zero, zero, one]]
    )
    m = to_centre @ rotation @ shift @ shear_m @ zoom @ from_centre  # (row, col) coordinates
    # ImageProjectiveTransformV3 works in (x=col, y=row): swap the axes.
    return tf.stack(
        [m[:, 1, 1], m[:, 1, 0], m[:, 1, 2], m[:, 0, 1], m[:, 0, 0], m[:, 0, 2], zero, zero],
        axis=-1,
    )


def augment_batch(images: Any, seeds: Any, config: AugmentConfig = AugmentConfig()) -> Any:
    """Augment a float batch (N, H, W, C); ``seeds`` int (N, 2), one stateless seed per image."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images, dtype=tf.float32)
    seeds = tf.cast(tf.convert_to_tensor(seeds), tf.int64)
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    params = tf.map_fn(
        lambda s: tf.random.stateless_uniform([7], seed=s, dtype=tf.float32),
        seeds,
        fn_output_signature=tf.float32,
    )
    transforms = _transform_rows(params, height, width, config)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode=_FILL_MODES[config.fill_mode],
    )
    if config.horizontal_flip:
        flip = params[:, 6] < 0.5
        out = tf.where(flip[:, None, None, None], tf.reverse(out, axis=[2]), out)
    return out


def variant_seed(key: Any, seed: int) -> Any:
    """Stateless seed (2,) for one feature key: (seed, stable 63-bit hash of the key)."""
    import tensorflow as tf

    key_hash = tf.strings.to_hash_bucket_fast(key, 2**62)
    return tf.stack([tf.constant(seed, tf.int64), key_hash])


def is_augmented_key(key: Any) -> Any:
    """True for ``<sha>#v<k>`` keys with k >= 1 (the store's variant key format)."""
    import tensorflow as tf

    return tf.strings.regex_full_match(key, r".*#v0*[1-9][0-9]*")


def make_augment_transform(
    config: AugmentConfig = AugmentConfig(), seed: int = DEFAULT_AUGMENT_SEED
) -> Callable[[Any, Any], Any]:
    """A ``transform(image, key)`` for ``extract_features``: augments variant keys only.

    ``image`` is one float32 RGB image (H, W, 3) in 0..255; ``key`` a python str or string tensor.
    """

    def transform(image: Any, key: Any) -> Any:
        import tensorflow as tf

        image = tf.convert_to_tensor(image, dtype=tf.float32)
        key = tf.convert_to_tensor(key, dtype=tf.string)
        augmented = augment_batch(image[None], variant_seed(key, seed)[None], config)[0]
        return tf.where(is_augmented_key(key), augmented, image)

    return transform
