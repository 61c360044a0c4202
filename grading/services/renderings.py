"""Server-rendered views of a photograph for the grading viewer, cached on disk.

The same ``mlcore.preprocessing`` functions the model uses produce the cropped and Ben Graham views,
so a clinician can see exactly the kind of picture the model is given. Renderings are cached under
``MEDIA_ROOT/views/<mode>/<sha256>.png`` (the photograph never changes, its hash names it) and written
atomically, so two requests rendering the same view at once never serve a half-written file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps
from django.conf import settings

from grading.models import Image

# Long side of a rendered view: sharp on a laptop or tablet, small enough to render in well under
# a second from a 12-megapixel photograph.
VIEW_MAX_SIZE = 1280
THUMBNAIL_SIZE = 240
VIEW_MODES = ("cropped", "red_free", "ben_graham", "thumb")


class RenderingFailed(ValueError):
    """The photograph could not be read or rendered."""


def image_view_cache_path(*, image: Image, mode: str) -> Path:
    return Path(settings.MEDIA_ROOT) / "views" / mode / f"{image.sha256}.png"


def _fit(pixels: np.ndarray, max_size: int) -> np.ndarray:
    picture = PIL.Image.fromarray(pixels)
    picture.thumbnail((max_size, max_size), PIL.Image.Resampling.LANCZOS)
    return np.asarray(picture)


def _render(source: Path, mode: str) -> PIL.Image.Image:
    from mlcore.preprocessing import PREPROCESSING, ImageLoadError, crop_to_fundus, load_rgb

    max_size = THUMBNAIL_SIZE if mode == "thumb" else VIEW_MAX_SIZE
    try:
        pixels = load_rgb(source, min_size=max_size)
    except ImageLoadError as error:
        raise RenderingFailed(str(error)) from None
    cropped = _fit(crop_to_fundus(pixels), max_size)
    if mode in ("cropped", "thumb"):
        return PIL.Image.fromarray(cropped)
    if mode == "red_free":
        # Red-free photography: the green channel carries most of the contrast of haemorrhages,
        # microaneurysms and vessels. A light autocontrast spreads it over the full range.
        green = PIL.Image.fromarray(np.ascontiguousarray(cropped[:, :, 1]))
        return PIL.ImageOps.autocontrast(green, cutoff=0.5)
    if mode == "ben_graham":
        # Exactly the model's "ben_graham" preprocessing (crop, pad to a square, filter), only
        # larger, so the clinician sees the picture the model is given.
        return PIL.Image.fromarray(PREPROCESSING["ben_graham"](pixels, max_size))
    raise ValueError(f"unknown view {mode!r}; known: {', '.join(VIEW_MODES)}")


def image_view_render(*, image: Image, mode: str) -> Path:
    """Path of the rendered view (rendering it on first use)."""
    if mode not in VIEW_MODES:
        raise ValueError(f"unknown view {mode!r}; known: {', '.join(VIEW_MODES)}")
    target = image_view_cache_path(image=image, mode=mode)
    if target.is_file():
        return target
    try:
        source = Path(image.file.path)
    except NotImplementedError:
        raise RenderingFailed("the photograph's storage has no local path") from None
    if not source.is_file():
        raise RenderingFailed("the photograph is missing from storage")
    rendered = _render(source, mode)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as output:
            rendered.save(output, format="PNG", optimize=False)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
