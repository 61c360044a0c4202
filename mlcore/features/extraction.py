"""Batched, incremental feature extraction: image files in, features in the HDF5 store.

``extract_features`` computes only the keys missing from each backbone's store, decoding and
preprocessing images in a thread or process pool (``mlcore.data.decoding``) ahead of the batches
while the backbone runs batched forward passes in a ``tf.function`` (batch norms folded into
the convolutions). Memory stays bounded by the decoder's chunks in flight, the prefetch buffers
and one batch per backbone, whatever the number of images. Backbones sharing an input size
share one decoding pass.

TensorFlow is imported inside the functions: ``load_features`` (and this module) can be used by
the web process without loading TensorFlow.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mlcore.data.decoding import decoded_images, default_decode_processes
from mlcore.data.preprocessing import ImageLoadError, preprocess_image
from mlcore.features.backbones import (
    BackboneSpec,
    build_backbone,
    get_backbone,
    resolve_weights,
)
from mlcore.features.config import FeatureConfig
from mlcore.features.store import FeatureStore, feature_key, store_path

if TYPE_CHECKING:
    import tensorflow as tf

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
# Augmentation transforms run in parallel (TensorFlow ops) and batches are prepared ahead of
# the model; decoding itself happens in mlcore.data.decoding's pool.
DECODE_THREADS = max(2, os.cpu_count() or 1)
PREFETCH_BATCHES = 2

Transform = Callable[["tf.Tensor", "tf.Tensor"], "tf.Tensor"]
# (N, size, size, 3) float32 RGB 0..255 images -> (N, feature_dim) features.
FeatureFunction = Callable[["tf.Tensor"], "tf.Tensor"]
Progress = Callable[[int, int], None]


class ImageSourceError(ValueError):
    """A folder or CSV of images cannot be used (no images, no ``filename`` column...)."""


@dataclass
class ImageItem:
    """An image file and its feature key (``mlcore.features.store.feature_key`` of its sha256)."""

    path: Path
    key: str

    def __post_init__(self) -> None:
        self.path = Path(self.path)


@dataclass
class ExtractionResult:
    """What one ``extract_features`` call did.

    ``computed[b]`` / ``reused[b]``: keys newly computed / already in backbone ``b``'s store;
    ``images_processed``: images pushed through the decoding pipeline; ``failed``: (path,
    reason) of unreadable images skipped (only with ``skip_unreadable=True``).
    """

    total: int
    computed: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)
    store_paths: dict[str, Path] = field(default_factory=dict)
    images_processed: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def image_items(paths: Iterable[str | Path], *, variant: int = 0) -> list[ImageItem]:
    """Items keyed by the sha256 of each file's bytes (plus ``#v<variant>`` when > 0)."""
    files = [Path(p) for p in paths]
    # hashlib releases the GIL on large buffers: a few threads hash big photographs in parallel.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(file_sha256, files))
    return [ImageItem(p, feature_key(d, variant)) for p, d in zip(files, digests, strict=True)]


def find_images(source: str | Path) -> list[Path]:
    """Image files of a folder (recursively, sorted) or of a CSV with a ``filename`` column
    (paths relative to the CSV's folder)."""
    source = Path(source)
    if source.is_dir():
        return sorted(
            p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
    if source.is_file() and source.suffix.lower() == ".csv":
        with source.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            if reader.fieldnames is None or "filename" not in reader.fieldnames:
                raise ImageSourceError(
                    f"{source} has no 'filename' column (found {reader.fieldnames})"
                )
            paths = [source.parent / row["filename"] for row in reader if row["filename"]]
        absent = [str(p) for p in paths if not p.is_file()]
        if absent:
            raise FileNotFoundError(
                f"{len(absent)} file(s) listed in {source} do not exist, e.g. {absent[:3]}"
            )
        return paths
    raise FileNotFoundError(f"{source} is neither a folder nor a CSV file")


@functools.lru_cache(maxsize=8)
def _feature_function(name: str, weights: str | None) -> FeatureFunction:
    """A compiled ``images float32 0..255 -> features`` function (built once per process)."""
    import tensorflow as tf

    spec = get_backbone(name)
    # Batch norms folded into the convolutions: same features, ~1.5x faster on CPU.
    model = build_backbone(name, weights=weights, fold_batch_norm=True)
    size = spec.input_size

    def features(images: tf.Tensor) -> tf.Tensor:
        return model(spec.preprocess(images), training=False)

    compiled: FeatureFunction = tf.function(
        features, input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)]
    )
    return compiled


def feature_function(
    name: str, *, weights: str | Path | None = "imagenet", weights_dir: str | Path | None = None
) -> FeatureFunction:
    """Cached ``tf.function`` mapping (N, size, size, 3) float32 RGB 0..255 images to (N,
    feature_dim) features of backbone ``name`` (its own preprocessing included)."""
    if weights == "imagenet":
        # Resolve now so the cache key names the file actually used.
        weights = str(resolve_weights(name, weights_dir))
    return _feature_function(name, None if weights is None else str(weights))


def _decoded_dataset(
    items: Sequence[ImageItem],
    *,
    size: int,
    method: str,
    batch_size: int,
    transform: Transform | None,
    decode_processes: int,
) -> tf.data.Dataset:
    import tensorflow as tf

    paths = [str(item.path) for item in items]
    keys = [item.key for item in items]

    def decoded_batches() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        # Whole batches cross from Python into tf.data: one call per batch rather than per
        # image saved ~1.5 ms of CPU per image (bench/extract.py; a forward pass costs ~12 ms).
        images = decoded_images(paths, method=method, size=size, processes=decode_processes)
        for start in range(0, len(paths), batch_size):
            chunk = list(itertools.islice(images, batch_size))
            yield (
                np.stack([image for image, _ in chunk]),
                np.asarray(keys[start : start + len(chunk)], dtype=object),
                np.asarray([ok for _, ok in chunk], dtype=bool),
            )

    dataset = tf.data.Dataset.from_generator(
        decoded_batches,
        output_signature=(
            tf.TensorSpec((None, size, size, 3), tf.uint8),
            tf.TensorSpec((None,), tf.string),
            tf.TensorSpec((None,), tf.bool),
        ),
    )
    if transform is not None:

        def augment(
            image: tf.Tensor, key: tf.Tensor, ok: tf.Tensor
        ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            image = tf.ensure_shape(transform(tf.cast(image, tf.float32), key), (size, size, 3))
            return image, key, ok

        dataset = (
            dataset.unbatch()
            .map(augment, num_parallel_calls=DECODE_THREADS, deterministic=True)
            .batch(batch_size)
        )
    # Without a transform, batches stay uint8 (4x less memory traffic than float32) and are cast
    # once per batch. Fixed buffers rather than AUTOTUNE: tf.data's autotuning thread made
    # destroying each finished iterator block for up to 2 s (measured on 2 cores, see
    # bench/extract.py), a cost paid by every extraction call. Memory stays bounded by the
    # decoder's chunks in flight plus PREFETCH_BATCHES batches.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(PREFETCH_BATCHES).with_options(options)


def extract_features(
    items: Sequence[ImageItem],
    *,
    config: FeatureConfig,
    store_dir: str | Path,
    weights_dir: str | Path | None = None,
    transform: Transform | None = None,
    progress: Progress | None = None,
    weights: str | Path | None = "imagenet",
    skip_unreadable: bool = False,
    decode_processes: int | None = None,
) -> ExtractionResult:
    """Compute the features of ``items`` missing from the stores of ``config.backbones``.

    ``transform(image_float32_0_255, key)`` runs after decoding/resizing and before the
    backbone's own preprocessing (augmentation hook). ``progress(done, total)`` is called after
    every batch with counts of images to process. ``weights=None`` uses random weights (tests
    and timing only). Unreadable images raise ``ImageLoadError`` naming the file, or are
    skipped and listed in ``result.failed`` with ``skip_unreadable=True``.
    ``decode_processes``: worker processes decoding ahead of the forward pass (default
    ``FUNDUS_DECODE_PROCESSES``, 0: threads of this process).
    """
    started = time.perf_counter()
    if decode_processes is None:
        decode_processes = default_decode_processes()
    unique: dict[str, ImageItem] = {}
    for item in items:
        unique.setdefault(item.key, item)
    result = ExtractionResult(total=len(unique))
    specs = [get_backbone(name) for name in config.backbones]
    stores: dict[str, FeatureStore] = {}
    try:
        _open_stores(stores, specs, config, Path(store_dir), result)
        missing = {name: set(store.missing(unique)) for name, store in stores.items()}
        for name in stores:
            result.computed[name] = 0
            result.reused[name] = len(unique) - len(missing[name])
        passes = _decoding_passes(specs, unique, missing)
        total = sum(len(work) for _, work in passes.values())
        if progress is not None:
            progress(0, total)
        for size, (names, work) in passes.items():
            if not work:
                continue
            functions = {
                name: feature_function(name, weights=weights, weights_dir=weights_dir)
                for name in names
            }
            dataset = _decoded_dataset(
                work,
                size=size,
                method=config.preprocessing,
                batch_size=config.batch_size,
                transform=transform,
                decode_processes=decode_processes,
            )
            paths_by_key = {item.key: item.path for item in work}
            for images, key_tensor, ok_tensor in dataset:
                keys = [k.decode() for k in key_tensor.numpy()]
                ok = ok_tensor.numpy()
                if not ok.all():
                    bad = [paths_by_key[k] for k, good in zip(keys, ok, strict=True) if not good]
                    if not skip_unreadable:
                        raise ImageLoadError(f"cannot read image(s): {', '.join(map(str, bad))}")
                    result.failed.extend((path, "unreadable image") for path in bad)
                _store_batch(images, keys, ok, functions, stores, missing, result)
                result.images_processed += len(keys)
                if progress is not None:
                    progress(result.images_processed, total)
    finally:
        for store in stores.values():
            store.close()
    result.seconds = time.perf_counter() - started
    return result


def _open_stores(
    stores: dict[str, FeatureStore],
    specs: Sequence[BackboneSpec],
    config: FeatureConfig,
    store_dir: Path,
    result: ExtractionResult,
) -> None:
    """Open each backbone's store into ``stores`` one by one, so that the caller closes the
    ones already open when a later one fails."""
    for spec in specs:
        path = store_path(store_dir, spec.name, config.preprocessing)
        stores[spec.name] = FeatureStore(
            path,
            backbone=spec.name,
            preprocessing=config.preprocessing,
            feature_dim=spec.feature_dim,
            dtype=config.dtype,
        )
        result.store_paths[spec.name] = path


def _decoding_passes(
    specs: Sequence[BackboneSpec],
    unique: Mapping[str, ImageItem],
    missing: Mapping[str, set[str]],
) -> dict[int, tuple[list[str], list[ImageItem]]]:
    """input size -> (the backbones of that size, the items any of them lacks): backbones
    sharing an input size share one decoding pass."""
    names_by_size: dict[int, list[str]] = {}
    for spec in specs:
        names_by_size.setdefault(spec.input_size, []).append(spec.name)
    return {
        size: (
            names,
            [item for key, item in unique.items() if any(key in missing[n] for n in names)],
        )
        for size, names in names_by_size.items()
    }


def _store_batch(
    images: tf.Tensor,
    keys: Sequence[str],
    ok: npt.NDArray[np.bool_],
    functions: Mapping[str, FeatureFunction],
    stores: Mapping[str, FeatureStore],
    missing: Mapping[str, set[str]],
    result: ExtractionResult,
) -> None:
    """Run each backbone on the readable images of the batch its store lacks, and store them."""
    import tensorflow as tf

    for name, function in functions.items():
        wanted = np.array([good and k in missing[name] for k, good in zip(keys, ok, strict=True)])
        if not wanted.any():
            continue
        batch = images if wanted.all() else _take(images, wanted)
        features = function(tf.cast(batch, tf.float32)).numpy()
        stores[name].put([k for k, w in zip(keys, wanted, strict=True) if w], features)
        result.computed[name] += int(wanted.sum())


def _take(images: Any, mask: np.ndarray) -> Any:
    import tensorflow as tf

    return tf.boolean_mask(images, tf.constant(mask))


def compute_features(
    images: Sequence[str | Path | np.ndarray],
    *,
    config: FeatureConfig,
    weights_dir: str | Path | None = None,
    weights: str | Path | None = "imagenet",
) -> np.ndarray:
    """Features of images (paths or RGB uint8 arrays) without touching the store: the
    concatenation across ``config.backbones`` in order, float32 (N, sum of feature dims).
    Used for one-off predictions; large sets belong in ``extract_features``."""
    import tensorflow as tf

    blocks = []
    for name in config.backbones:
        spec = get_backbone(name)
        function = feature_function(name, weights=weights, weights_dir=weights_dir)
        features = []
        for start in range(0, len(images), config.batch_size):
            batch = np.stack(
                [
                    preprocess_image(image, method=config.preprocessing, size=spec.input_size)
                    for image in images[start : start + config.batch_size]
                ]
            )
            features.append(function(tf.constant(batch, tf.float32)).numpy())
        blocks.append(
            np.concatenate(features) if features else np.empty((0, spec.feature_dim), np.float32)
        )
    return np.concatenate(blocks, axis=1).astype(np.float32)


def load_features(
    keys: Sequence[str], *, config: FeatureConfig, store_dir: str | Path
) -> np.ndarray:
    """Stored features of ``keys``, concatenated across ``config.backbones`` in order:
    float32 (len(keys), sum of feature dims). KeyError names keys not extracted yet."""
    blocks = []
    for name in config.backbones:
        spec = get_backbone(name)
        path = store_path(store_dir, name, config.preprocessing)
        if not path.exists():
            raise FileNotFoundError(
                f"no feature store for backbone {name!r} with preprocessing "
                f"{config.preprocessing!r} at {path}; run `python -m mlcore extract` first"
            )
        store = FeatureStore(
            path,
            backbone=name,
            preprocessing=config.preprocessing,
            feature_dim=spec.feature_dim,
            dtype=config.dtype,
            mode="r",
        )
        blocks.append(store.get(keys))
    return np.concatenate(blocks, axis=1)
