"""Bringing a raw fundus photograph into the domain of the shared (pre-filtered) training set.

The shared APTOS set is 224 x 224 and already Gaussian filtered (``4*I - 4*GaussianBlur(I) +
128``), but with a much narrower blur than Ben Graham's usual sigma = 10 px at 224 px: its images
are low-contrast, fine-detail high-pass pictures, and the fundus is stretched to fill the square
(no padding, no circular mask). Measured on ``../shared/datasets/raw-fundus`` with MobileNetV2
features (``tests/mlcore/test_domain.py``; the default backbones in ``bench/README.md``): after
``preprocessing.ben_graham`` (sigma 10 px at 224 px, padded, masked) the photos' nearest training
image is 25-28 away, beyond any training image's nearest neighbour (at most 20); after
:func:`filter_like_training` (crop, stretch to the square, sigma 1.5 px per 224 px) it is 16.5
(median) to 19.6, i.e. the photos look like training images to the model.

Numpy and Pillow only: the web process can show this view without loading TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from mlcore.data.preprocessing import (
    PREPROCESSING,
    crop_to_fundus,
    fundus_bounding_box,
    load_rgb,
    looks_gaussian_filtered,
)

# Name recorded in model artifacts (``raw_photo_preprocessing``) and used as the feature store's
# preprocessing name for raw photographs filtered this way.
RAW_TO_FILTERED = "raw_to_filtered"
# Blur of the training set's filter, in pixels per 224 px of output: the value whose features of
# raw photographs come closest to the training set's (1.0 and 2.0 are close seconds; 10 is far).
SIGMA_PER_224 = 1.5

# Training domains a model folder records: trained on the (already filtered) shared set, or on
# raw camera photographs.
DOMAIN_FILTERED = "gaussian_filtered"
DOMAIN_RAW = "raw"
DOMAINS = (DOMAIN_FILTERED, DOMAIN_RAW)
# Decoding a 4288 x 2848 JPEG at reduced scale is enough to tell a raw photo from a filtered one.
DOMAIN_CHECK_SIZE = 256


class DomainMismatchError(ValueError):
    """An image cannot be brought into the domain the model was trained on."""


def filter_like_training(img: np.ndarray, size: int = 224) -> np.ndarray:
    """Crop to the fundus, stretch to ``size`` x ``size``, Gaussian high-pass as the training set:
    ``4*I - 4*GaussianBlur(I, sigma) + 128`` with sigma = 1.5 px per 224 px, clipped."""
    cropped = crop_to_fundus(img)
    resized = np.asarray(
        Image.fromarray(cropped).resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8
    )
    sigma = SIGMA_PER_224 * size / 224
    blurred = np.asarray(
        Image.fromarray(resized).filter(ImageFilter.GaussianBlur(radius=sigma)), dtype=np.float32
    )
    filtered = 4.0 * resized.astype(np.float32) - 4.0 * blurred + 128.0
    return np.clip(np.round(filtered), 0, 255).astype(np.uint8)


def preprocess_for(img: np.ndarray, method: str, size: int) -> np.ndarray:
    """Any preprocessing by name: :data:`RAW_TO_FILTERED` or one of ``PREPROCESSING``."""
    if method == RAW_TO_FILTERED:
        return filter_like_training(img, size)
    try:
        return PREPROCESSING[method](img, size)
    except KeyError:
        known = ", ".join(sorted([*PREPROCESSING, RAW_TO_FILTERED]))
        raise LookupError(f"unknown preprocessing {method!r}; known: {known}") from None


def is_known(method: str) -> bool:
    return method == RAW_TO_FILTERED or method in PREPROCESSING


def input_geometry(
    img: np.ndarray, method: str, size: int
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Where a model input of ``method`` came from in ``img``: the (top, bottom, left, right) box
    of the image it shows, and the (top, height, left, width) window of the square that holds it
    (``resize_pad`` centres the box and pads; :data:`RAW_TO_FILTERED` stretches it)."""
    if method in ("crop", "ben_graham", RAW_TO_FILTERED):
        box = fundus_bounding_box(img)
    else:
        box = (0, img.shape[0], 0, img.shape[1])
    if method == RAW_TO_FILTERED:
        return box, (0, size, 0, size)
    height, width = box[1] - box[0], box[3] - box[2]
    scale = size / max(height, width)
    new_height = max(1, min(size, round(height * scale)))
    new_width = max(1, min(size, round(width * scale)))
    return box, ((size - new_height) // 2, new_height, (size - new_width) // 2, new_width)


@dataclass(frozen=True)
class ImageDomain:
    """A model's training domain and how any photograph reaches it: ``preprocessing`` for
    images already in the domain, ``raw_photo_preprocessing`` for raw photographs given to a
    model trained on filtered images (see the module docstring). Training, its hold-out and
    prediction all load images through :meth:`load`, so a photograph reaches the network the
    same way whether it is trained on or graded."""

    training_domain: str = DOMAIN_FILTERED
    preprocessing: str = "none"
    raw_photo_preprocessing: str | None = RAW_TO_FILTERED

    def __post_init__(self) -> None:
        if self.training_domain not in DOMAINS:
            raise ValueError(f"training_domain must be one of {DOMAINS}")
        for method in (self.preprocessing, self.raw_photo_preprocessing):
            if method is not None and not is_known(method):
                raise LookupError(f"unknown preprocessing {method!r}")

    def method_for_filtered(self, filtered: bool, name: str = "image") -> str:
        """The preprocessing for an image that looks already Gaussian filtered, or not."""
        if self.training_domain == DOMAIN_FILTERED:
            if filtered:
                return self.preprocessing
            if self.raw_photo_preprocessing is None:
                raise DomainMismatchError(
                    f"{name} looks like a raw photograph but the model was trained on "
                    f"Gaussian-filtered images and records no preprocessing to filter it"
                )
            return self.raw_photo_preprocessing
        if filtered:
            raise DomainMismatchError(
                f"{name} looks already Gaussian (Ben Graham) filtered, but the model was trained "
                f"on raw photographs (preprocessing {self.preprocessing!r}); upload the original "
                "photograph"
            )
        return self.preprocessing

    def method_for(self, path: str | Path) -> str:
        """The preprocessing that brings the image file ``path`` into the domain."""
        image = load_rgb(path, min_size=DOMAIN_CHECK_SIZE)
        return self.method_for_filtered(looks_gaussian_filtered(image), str(path))

    def load(
        self, paths: Sequence[str | Path], *, size: int, methods: Sequence[str] | None = None
    ) -> tuple[npt.NDArray[np.uint8], list[str]]:
        """(images (n, size, size, 3) uint8 in the domain, the preprocessing of each);
        ``methods``: already known preprocessings (e.g. cached), else detected per image."""
        chosen = [self.method_for(p) for p in paths] if methods is None else list(methods)
        if len(chosen) != len(paths):
            raise ValueError(f"{len(paths)} images but {len(chosen)} preprocessings")
        images = np.zeros((len(paths), size, size, 3), np.uint8)
        for i, (path, method) in enumerate(zip(paths, chosen, strict=True)):
            images[i] = preprocess_for(load_rgb(path, min_size=math.ceil(size * 1.5)), method, size)
        return images, chosen
