"""Server-rendered views of a photograph for the grading viewer, cached on disk.

The same ``mlcore.data.preprocessing`` functions the model uses produce the cropped and Ben Graham views,
so a clinician can see exactly the kind of picture the model is given. Renderings are cached under
``MEDIA_ROOT/views/<mode>/<sha256>.png`` (the photograph never changes, its hash names it) and written
atomically, so two requests rendering the same view at once never serve a half-written file.

A raw camera photograph takes seconds to render, so every image created to be graded has its views
rendered in the background (``image_views_render_enqueue``, called by ``image_create``): by the time a
clinician opens it, switching views is instant. A view not rendered yet is still rendered on request.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageFilter
import PIL.ImageOps
from django.conf import settings
from django.db import transaction

from grading import storage
from grading.models import Image

logger = logging.getLogger(__name__)

# Long side of a rendered view: sharp on a laptop or tablet, small enough to render in well under
# a second from a 12-megapixel photograph.
VIEW_MAX_SIZE = 1280
THUMBNAIL_SIZE = 240
VIEW_MODES = ("cropped", "red_free", "ben_graham", "thumb")
RENDER_TASK = "grading.tasks.image_views_render"
# After Redis failed to answer, skip queueing renders for this long: a bulk import must not pay
# a connection timeout per photograph (the views are then rendered on first request).
QUEUE_DOWN_BACKOFF_SECONDS = 30.0
_queue_down_since: float | None = None


class RenderingFailed(ValueError):
    """The photograph could not be read or rendered."""


def image_view_cache_path(*, image: Image, mode: str) -> Path:
    return Path(settings.MEDIA_ROOT) / "views" / mode / f"{image.sha256}.png"


def _fit(pixels: np.ndarray, max_size: int) -> np.ndarray:
    picture = PIL.Image.fromarray(pixels)
    picture.thumbnail((max_size, max_size), PIL.Image.Resampling.LANCZOS)
    return np.asarray(picture)


def _load(source: Path, max_size: int) -> np.ndarray:
    from mlcore.data.preprocessing import ImageLoadError, load_rgb

    try:
        return load_rgb(source, min_size=max_size)
    except ImageLoadError as error:
        raise RenderingFailed(str(error)) from None


def _render(source: Path, mode: str, pixels: np.ndarray | None = None) -> PIL.Image.Image:
    from mlcore.data.preprocessing import PREPROCESSING, crop_to_fundus

    max_size = THUMBNAIL_SIZE if mode == "thumb" else VIEW_MAX_SIZE
    if pixels is None:
        pixels = _load(source, max_size)
    cropped = _fit(crop_to_fundus(pixels), max_size)
    if mode in ("cropped", "thumb"):
        return PIL.Image.fromarray(cropped)
    if mode == "red_free":
        # Red-free photography: the green channel carries most of the contrast of haemorrhages,
        # microaneurysms and vessels. A light autocontrast spreads it over the full range.
        green = PIL.Image.fromarray(np.ascontiguousarray(cropped[:, :, 1]))
        return PIL.ImageOps.autocontrast(green, cutoff=0.5)
    if mode == "ben_graham":
        # The model's "ben_graham" preprocessing (crop, pad to a square, filter), only larger, so
        # the clinician sees the picture the model is given, grey outside the fundus.
        return PIL.Image.fromarray(
            _outside_fundus_grey(PREPROCESSING["ben_graham"](pixels, max_size), pixels, max_size)
        )
    raise ValueError(f"unknown view {mode!r}; known: {', '.join(VIEW_MODES)}")


def _outside_fundus_grey(filtered: np.ndarray, pixels: np.ndarray, size: int) -> np.ndarray:
    """Grey (128, the filter's zero) wherever the padded photograph was camera border. The
    filter's circle assumes a whole disc: where a wide photograph cuts the disc at the top and
    bottom, the blurred fundus bled into the black padding as blue-green arcs."""
    from mlcore.data.preprocessing import BORDER_THRESHOLD, crop_to_fundus, resize_pad

    square = resize_pad(crop_to_fundus(pixels), size)
    inside = PIL.Image.fromarray(
        ((square.mean(axis=2) > BORDER_THRESHOLD) * 255).astype(np.uint8)
    ).filter(PIL.ImageFilter.MinFilter(5))  # a few pixels in: the edge itself is JPEG noise
    masked = filtered.copy()
    masked[np.asarray(inside) == 0] = 128
    return masked


def _source_path(image: Image) -> Path:
    """The photograph as a local file (downloaded into the cache with remote storage)."""
    try:
        source = storage.media_local(image.file.name)
    except storage.StorageMissing:
        raise RenderingFailed("the photograph is missing from storage") from None
    if not source.is_file():
        raise RenderingFailed("the photograph is missing from storage")
    return source


def image_view_render(*, image: Image, mode: str) -> Path:
    """Path of the rendered view (rendering it on first use)."""
    if mode not in VIEW_MODES:
        raise ValueError(f"unknown view {mode!r}; known: {', '.join(VIEW_MODES)}")
    target = image_view_cache_path(image=image, mode=mode)
    # Rendered once for every web server: this machine's cache, else the bucket, else now.
    return storage.cached_product(
        name=_view_name(image, mode),
        cache_path=target,
        produce=lambda path: _write(path, _render(_source_path(image), mode)),
    )


def _view_name(image: Image, mode: str) -> str:
    return f"views/{mode}/{image.sha256}.png"


def image_views_render(*, image: Image) -> list[str]:
    """Render every view not cached yet, decoding the photograph once; returns the modes
    rendered (none when all were cached)."""
    missing = [
        mode
        for mode in VIEW_MODES
        if not image_view_cache_path(image=image, mode=mode).is_file()
        and not (storage.storage_is_remote() and storage.object_exists(_view_name(image, mode)))
    ]
    if not missing:
        return []
    source = _source_path(image)
    # Decoded once at the larger size; the thumbnail is fitted down from the same pixels.
    pixels = _load(source, VIEW_MAX_SIZE)
    for mode in missing:
        target = image_view_cache_path(image=image, mode=mode)
        _write(target, _render(source, mode, pixels))
        storage.product_upload(name=_view_name(image, mode), cache_path=target)
    return missing


def image_views_render_enqueue(*, image_id: int) -> None:
    """Queue, when the surrounding transaction commits, the background rendering of the image's
    views. Never raises: without Redis the views are simply rendered on first request."""
    transaction.on_commit(lambda: _views_render_send(image_id=image_id), robust=True)


def _views_render_send(*, image_id: int) -> bool:
    global _queue_down_since
    from grading.celery import app
    from grading.services.jobs import queue_is_available

    now = time.monotonic()
    if _queue_down_since is not None and now - _queue_down_since < QUEUE_DOWN_BACKOFF_SECONDS:
        return False
    # Celery's own send waits through a long reconnect loop when Redis is down: ask first.
    if not queue_is_available(timeout=0.5):
        _queue_down_since = now
        logger.warning(
            "Views of image %s not queued for rendering: Redis does not answer", image_id
        )
        return False
    _queue_down_since = None
    try:
        app.send_task(RENDER_TASK, args=[image_id], retry=False)
    except Exception:
        logger.exception("Views of image %s could not be queued for rendering", image_id)
        return False
    return True


def _write(target: Path, rendered: PIL.Image.Image) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as output:
            rendered.save(output, format="PNG", optimize=False)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
