"""Fundus image preprocessing with numpy and Pillow only.

The web process imports this module to show the cropped and Ben Graham views, so it must never
import TensorFlow. The extraction pipeline calls the very same functions (inside ``tf.data``),
which keeps the pixels a model sees at training and at prediction time identical.

Images are ``uint8`` arrays of shape ``(H, W, 3)`` in RGB order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

# Pixels whose channel mean is at or below this are camera border (the raw photographs have
# JPEG noise up to ~10 in the blue channel outside the fundus).
BORDER_THRESHOLD = 15
# A row/column belongs to the fundus when at least this fraction of it is brighter than the
# border; ignores isolated bright specks (text burnt into the border, hot pixels).
_MIN_FUNDUS_FRACTION = 0.01
# Ben Graham's recipe blurs with sigma = 10 at 224 px (the shared dataset was filtered this way).
_BEN_GRAHAM_SIGMA_PER_PIXEL = 10 / 224
# Decode JPEGs at a reduced DCT scale when the image is much larger than needed: a 4288 x 2848
# photo decodes ~20x faster at 1/8 scale, and 1.5x the target size keeps enough detail for the
# crop and the final resize.
_DRAFT_OVERSAMPLING = 1.5
_EXIF_ORIENTATION = 0x0112


class ImageLoadError(ValueError):
    """The file is not an image Pillow can decode."""


def load_rgb(path: str | Path, *, min_size: int | None = None) -> np.ndarray:
    """Decode an image file to an RGB ``uint8`` array, honouring the EXIF orientation.

    ``min_size`` lets JPEG decoding skip detail that a later resize to ``min_size`` pixels would
    throw away anyway (Pillow's draft mode; both sides stay >= ``min_size``).
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            if min_size is not None and image.format == "JPEG":
                image.draft("RGB", (min_size, min_size))
            upright: Image.Image = image
            if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                upright = ImageOps.exif_transpose(image)
            return np.array(upright.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageLoadError(f"cannot read image {path}: {error}") from error


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"expected an RGB image array (H, W, 3), got shape {img.shape}")
    if img.shape[2] == 4:
        img = img[:, :, :3]
    if img.dtype != np.uint8:
        img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return img


def fundus_bounding_box(
    img: np.ndarray, threshold: int = BORDER_THRESHOLD
) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the area brighter than the black camera border (end
    exclusive); the whole image when nothing is bright enough."""
    img = _check_image(img)
    bright = img.mean(axis=2) > threshold
    rows = np.flatnonzero(bright.mean(axis=1) >= _MIN_FUNDUS_FRACTION)
    cols = np.flatnonzero(bright.mean(axis=0) >= _MIN_FUNDUS_FRACTION)
    if rows.size == 0 or cols.size == 0:
        return 0, img.shape[0], 0, img.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def crop_to_fundus(img: np.ndarray, threshold: int = BORDER_THRESHOLD) -> np.ndarray:
    """Drop the black border around the circular fundus (found by thresholding)."""
    img = _check_image(img)
    top, bottom, left, right = fundus_bounding_box(img, threshold)
    return img[top:bottom, left:right]


def resize_pad(img: np.ndarray, size: int) -> np.ndarray:
    """Resize so the longer side is ``size`` (keeping the aspect ratio), then pad to a black
    ``size`` x ``size`` square, centred."""
    img = _check_image(img)
    if size < 1:
        raise ValueError(f"size must be positive, not {size}")
    height, width = img.shape[:2]
    if height == size and width == size:
        return img
    scale = size / max(height, width)
    new_height = max(1, min(size, round(height * scale)))
    new_width = max(1, min(size, round(width * scale)))
    resized = np.asarray(
        Image.fromarray(img).resize((new_width, new_height), Image.Resampling.BICUBIC)
    )
    if new_height == size and new_width == size:
        return resized
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    top = (size - new_height) // 2
    left = (size - new_width) // 2
    canvas[top : top + new_height, left : left + new_width] = resized
    return canvas


def ben_graham(img: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Ben Graham's local average colour subtraction: ``4*I - 4*GaussianBlur(I) + 128``, clipped
    to 0..255, with everything outside a centred circle (90 % of the half-size) set to 128.

    ``sigma`` defaults to 10 px per 224 px of image width, as in the shared dataset.
    """
    img = _check_image(img)
    height, width = img.shape[:2]
    if sigma is None:
        sigma = _BEN_GRAHAM_SIGMA_PER_PIXEL * max(height, width)
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, not {sigma}")
    blurred = np.asarray(
        Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=sigma)), dtype=np.float32
    )
    filtered = 4.0 * img.astype(np.float32) - 4.0 * blurred + 128.0
    rows, cols = np.ogrid[:height, :width]
    radius = 0.9 * min(height, width) / 2
    outside = (rows - (height - 1) / 2) ** 2 + (cols - (width - 1) / 2) ** 2 > radius**2
    filtered[outside] = 128.0
    return np.clip(np.round(filtered), 0, 255).astype(np.uint8)


def _method_none(img: np.ndarray, size: int) -> np.ndarray:
    return resize_pad(img, size)


def _method_crop(img: np.ndarray, size: int) -> np.ndarray:
    return resize_pad(crop_to_fundus(img), size)


def _method_ben_graham(img: np.ndarray, size: int) -> np.ndarray:
    return ben_graham(resize_pad(crop_to_fundus(img), size))


PREPROCESSING: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "none": _method_none,
    "crop": _method_crop,
    "ben_graham": _method_ben_graham,
}


def preprocess_image(
    path_or_array: str | Path | np.ndarray, *, method: str, size: int
) -> np.ndarray:
    """Load (when given a path) and preprocess an image to ``uint8 (size, size, 3)``."""
    try:
        function = PREPROCESSING[method]
    except KeyError:
        raise LookupError(
            f"unknown preprocessing {method!r}; known: {', '.join(sorted(PREPROCESSING))}"
        ) from None
    if isinstance(path_or_array, (str, Path)):
        img = load_rgb(path_or_array, min_size=math.ceil(size * _DRAFT_OVERSAMPLING))
    else:
        img = _check_image(path_or_array)
    return function(img, size)


def looks_gaussian_filtered(img: np.ndarray) -> bool:
    """Whether an image already looks Ben-Graham filtered, like the shared training set.

    Filtered images are grey high-pass pictures: the median is ~128, most pixels sit close to
    128, and there is no black camera border; raw photographs are dark-bordered and reddish.
    Used at prediction time to decide whether an upload must be filtered before the model sees it.
    """
    img = _check_image(img)
    pixels = img.reshape(-1, 3).astype(np.int16)
    if pixels.shape[0] > 65536:  # a regular subsample is plenty for these statistics
        pixels = pixels[:: pixels.shape[0] // 65536]
    near_black = float(np.mean(pixels.max(axis=1) < BORDER_THRESHOLD))
    near_grey = float(np.mean(np.abs(pixels - 128).max(axis=1) <= 40))
    median = np.median(pixels, axis=0)
    return near_black < 0.02 and near_grey > 0.6 and bool(np.all(np.abs(median - 128) <= 32))
