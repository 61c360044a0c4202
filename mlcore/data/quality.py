"""Photo-quality measures and a gradability score (numpy + Pillow only, no TensorFlow, no Django).

A screening programme rejects a photograph that is out of focus, badly exposed, or does not show
the retina, before anyone spends time grading it. Measured on a working copy resized to
``WORKING_SIZE`` px on its long side, so thresholds mean the same for a 224 px and a 4288 px file:

- focus: variance of the Laplacian inside the fundus (eroded, so the disc's rim does not count);
- exposure: share of fundus pixels clipped dark (all channels < ``DARK_LEVEL``) or bright
  (luma > ``BRIGHT_LEVEL``);
- field of view: share of the frame inside the fundus disc (the background is whatever colour the
  frame's border has: black for camera photos, flat grey for Gaussian-filtered sets);
- resolution: the short side of the original, in pixels.

``gradability_score`` maps each measure to 0-1, where 0.5 is exactly its threshold, and keeps the
worst: a photo is as gradable as its weakest aspect, and ``score >= 0.5`` means every threshold is
met.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import PIL.Image
import PIL.ImageFilter

WORKING_SIZE = 512
DARK_LEVEL = 45
BRIGHT_LEVEL = 250
BACKGROUND_DISTANCE = 12  # colour distance from the border colour that counts as fundus
TEXTURE_LEVEL = 2.0  # local standard deviation that counts as fundus (filtered, grey sets)
MASK_SCALE = 4  # the fundus mask is cleaned at 1/4 of the working size


@dataclass(frozen=True)
class QualityThresholds:
    """What a gradable photograph must reach; an admin tunes these in the grading settings."""

    min_focus: float = 3.0
    max_clipped: float = 0.3
    min_coverage: float = 0.5
    min_resolution: int = 224


@dataclass(frozen=True)
class QualityMeasures:
    focus: float
    dark_fraction: float
    bright_fraction: float
    coverage: float
    width: int
    height: int

    @property
    def clipped_fraction(self) -> float:
        return self.dark_fraction + self.bright_fraction

    def to_dict(self) -> dict[str, float | int]:
        return {key: (round(value, 5) if isinstance(value, float) else value)
                for key, value in asdict(self).items()}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualityMeasures:
        """From ``to_dict``'s output (as stored in a JSON field)."""
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})


def _working_copy(image: PIL.Image.Image) -> np.ndarray:
    rgb = image.convert("RGB")
    scale = WORKING_SIZE / max(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    return np.asarray(rgb.resize(size, PIL.Image.Resampling.BILINEAR), dtype=np.float32)


def _box_mean(values: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window via an integral image (edges padded by reflection)."""
    # float64: an integral image of squared 8-bit values over 512 x 512 pixels reaches 1e10,
    # beyond float32's exact range (the variance came out as noise).
    padded = np.pad(values.astype(np.float64), radius + 1, mode="reflect")
    integral = padded.cumsum(axis=0).cumsum(axis=1)
    k = 2 * radius + 1
    total = integral[k:, k:] - integral[:-k, k:] - integral[k:, :-k] + integral[:-k, :-k]
    mean: npt.NDArray[np.float64] = total[: values.shape[0], : values.shape[1]] / (k * k)
    return mean


def fundus_mask(rgb: np.ndarray) -> np.ndarray:
    """The fundus disc: pixels unlike the frame's border colour, or textured."""
    height, width, _ = rgb.shape
    border = max(2, min(height, width) // 50)
    edge = np.concatenate(
        [
            rgb[:border].reshape(-1, 3),
            rgb[-border:].reshape(-1, 3),
            rgb[:, :border].reshape(-1, 3),
            rgb[:, -border:].reshape(-1, 3),
        ]
    )
    background = np.median(edge, axis=0)
    distance = np.abs(rgb - background).max(axis=2)
    luma = rgb @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    local_var = _box_mean(luma * luma, 3) - _box_mean(luma, 3) ** 2
    raw = (distance > BACKGROUND_DISTANCE) | (np.sqrt(np.maximum(local_var, 0)) > TEXTURE_LEVEL)
    # Cleaned at a quarter of the working size (rank filters cost the square of their size):
    # a median drops speckle in the background, a closing (max then min) fills vessels and dark
    # lesions inside the disc.
    small = (
        PIL.Image.fromarray((raw * 255).astype(np.uint8))
        .resize(
            (max(1, width // MASK_SCALE), max(1, height // MASK_SCALE)), PIL.Image.Resampling.BOX
        )
        .point(lambda value: 255 if value > 127 else 0)
        .filter(PIL.ImageFilter.MedianFilter(3))
        .filter(PIL.ImageFilter.MaxFilter(5))
        .filter(PIL.ImageFilter.MinFilter(5))
    )
    return np.asarray(small.resize((width, height), PIL.Image.Resampling.NEAREST)) > 127


def _erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Shrink the mask by about ``pixels`` (at a quarter of the size, for speed)."""
    height, width = mask.shape
    small = PIL.Image.fromarray((mask * 255).astype(np.uint8)).resize(
        (max(1, width // MASK_SCALE), max(1, height // MASK_SCALE)), PIL.Image.Resampling.BOX
    )
    size = 2 * max(1, round(pixels / MASK_SCALE)) + 1
    eroded = small.point(lambda value: 255 if value > 254 else 0).filter(
        PIL.ImageFilter.MinFilter(size)
    )
    return np.asarray(eroded.resize((width, height), PIL.Image.Resampling.NEAREST)) > 127


def _laplacian(gray: np.ndarray) -> np.ndarray:
    padded = np.pad(gray, 1, mode="edge")
    laplacian: npt.NDArray[np.float32] = (
        padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
        - 4 * padded[1:-1, 1:-1]
    )  # fmt: skip
    return laplacian


def quality_measure_image(image: PIL.Image.Image) -> QualityMeasures:
    """Measure one decoded photograph."""
    width, height = image.size
    if image.format == "JPEG":
        # Decode a camera JPEG at reduced scale (DCT scaling): 10x faster, same working copy.
        image.draft("RGB", (2 * WORKING_SIZE, 2 * WORKING_SIZE))
    rgb = _working_copy(image)
    mask = fundus_mask(rgb)
    luma = rgb @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    inner = _erode(mask, max(2, round(0.03 * min(mask.shape))))
    focus = float(_laplacian(luma)[inner].var()) if inner.any() else 0.0
    inside = rgb[mask]
    if inside.size:
        dark = float((inside.max(axis=1) < DARK_LEVEL).mean())
        bright = float((luma[mask] > BRIGHT_LEVEL).mean())
    else:
        dark, bright = 1.0, 0.0
    return QualityMeasures(
        focus=focus,
        dark_fraction=dark,
        bright_fraction=bright,
        coverage=float(mask.mean()),
        width=width,
        height=height,
    )


def quality_measure_bytes(data: bytes) -> QualityMeasures:
    with PIL.Image.open(io.BytesIO(data)) as image:
        return quality_measure_image(image)


def _clip01(value: float) -> float:
    return min(1.0, max(0.0, value))


def gradability_components(
    measures: QualityMeasures, thresholds: QualityThresholds = QualityThresholds()
) -> dict[str, float]:
    """Each measure on 0-1, 0.5 at its threshold: focus on a log scale (0.5 per doubling),
    exposure and coverage linearly (1 at no clipping, at twice the coverage threshold);
    resolution is 1 once met, below it the share of the threshold reached, halved."""
    focus = (
        0.5 + 0.5 * math.log2(max(measures.focus, 1e-9) / thresholds.min_focus)
        if thresholds.min_focus > 0
        else 1.0
    )
    clipped = (
        1.0 - 0.5 * measures.clipped_fraction / thresholds.max_clipped
        if thresholds.max_clipped > 0
        else (1.0 if measures.clipped_fraction == 0 else 0.0)
    )
    coverage = (
        0.5 * measures.coverage / thresholds.min_coverage if thresholds.min_coverage > 0 else 1.0
    )
    short_side = min(measures.width, measures.height)
    # Enough pixels is a yes/no requirement: meeting it counts fully, not as a borderline 0.5.
    resolution = (
        0.5 * short_side / thresholds.min_resolution
        if short_side < thresholds.min_resolution
        else 1.0
    )
    return {
        "focus": _clip01(focus),
        "exposure": _clip01(clipped),
        "coverage": _clip01(coverage),
        "resolution": _clip01(resolution),
    }


def gradability_score(
    measures: QualityMeasures, thresholds: QualityThresholds = QualityThresholds()
) -> float:
    """0-1; below 0.5 at least one measure misses its threshold."""
    return min(gradability_components(measures, thresholds).values())


# ---------------------------------------------------------------------------------------------
# Degraded copies, to evaluate the score (tests and bench/quality.py): what makes a screening
# photograph ungradable, applied to a good one.

DEGRADATIONS = ("blurred", "darkened", "cropped")


def degraded_copy(image: PIL.Image.Image, kind: str) -> PIL.Image.Image:
    """``blurred``: Gaussian blur of 1 % of the long side (lesions the size of a microaneurysm
    vanish); ``darkened``: a quarter of the exposure; ``cropped``: the fundus shifted 70 % of the
    frame's width out of the picture (a misaligned camera), the frame size kept."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    if kind == "blurred":
        return rgb.filter(PIL.ImageFilter.GaussianBlur(radius=0.01 * max(width, height)))
    if kind == "darkened":
        return PIL.Image.eval(rgb, lambda value: int(value * 0.25))
    if kind == "cropped":
        background = tuple(int(v) for v in np.median(np.asarray(rgb)[:2].reshape(-1, 3), axis=0))
        canvas = PIL.Image.new("RGB", rgb.size, background)
        canvas.paste(rgb, (int(0.7 * width), 0))
        return canvas
    raise ValueError(f"unknown degradation {kind!r}; known: {', '.join(DEGRADATIONS)}")


def separation_auc(good: list[float], degraded: list[float]) -> float:
    """Probability that a good photograph scores above a degraded one (ROC AUC, ties half)."""
    if not good or not degraded:
        raise ValueError("need scores of both good and degraded photographs")
    good_scores = np.asarray(good, dtype=np.float64)[:, None]
    bad_scores = np.asarray(degraded, dtype=np.float64)[None, :]
    return float((good_scores > bad_scores).mean() + 0.5 * (good_scores == bad_scores).mean())
