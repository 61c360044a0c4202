"""The frozen bottom's feature maps, computed once per image (and per augmented copy) so that
only the top trains on them, and the training inputs built from them (or from the images when
the whole network trains)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcore.data.augment import augment_batch
from mlcore.data.domain import ImageDomain
from mlcore.models.finetune.config import FinetuneConfig, Progress
from mlcore.models.finetune.network import (
    FinetuneNetwork,
    Images,
    build_network,
)
from mlcore.models.finetuned import scaled_for_backbone

Maps = npt.NDArray[np.float16]


def bottom_maps(
    net: FinetuneNetwork,
    images: Images,
    *,
    config: FinetuneConfig,
    variant: int = 0,
    batch_size: int = 32,
    index_offset: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Maps:
    """The frozen bottom's maps (float16) of the images, or of their augmented copy ``variant``
    (the same picture on every run: stateless seeds from (seed, image index, variant))."""
    import tensorflow as tf

    if net.bottom is None:
        raise ValueError("the whole network trains (top_blocks=None): there is no frozen bottom")
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start : start + batch_size], tf.float32)
        if variant:
            index = np.arange(start, start + batch.shape[0], dtype=np.int64) + index_offset
            seeds = np.stack([np.full_like(index, config.seed), index * 1000 + variant], axis=1)
            batch = augment_batch(batch, seeds, config.augment)
        maps = net.bottom(scaled_for_backbone(batch, config.backbone), training=False)
        outputs.append(np.asarray(maps, dtype=np.float16))
        if progress is not None:
            progress(min(len(images), start + batch_size), len(images))
    return np.concatenate(outputs) if outputs else np.zeros((0,), np.float16)


def cache_bottom_maps(
    paths: Sequence[str | Path],
    *,
    config: FinetuneConfig,
    domain: ImageDomain | None = None,
    weights: str | Path | None = "imagenet",
    weights_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk: int = 256,
) -> Maps:
    """The frozen bottom's maps of every image and of its ``config.variants`` augmented copies:
    (1 + variants, n, h, w, c) float16, decoded in chunks so memory holds maps, not images."""
    from mlcore.features.backbones import get_backbone

    net = build_network(config, weights=weights, weights_dir=weights_dir)
    if net.bottom is None:
        raise ValueError("the whole network trains (top_blocks=None): there is no frozen bottom")
    size = get_backbone(config.backbone).input_size
    versions = config.variants + 1
    shape = tuple(int(d) for d in net.bottom.output.shape[1:])
    cache = np.zeros((versions, len(paths), *shape), np.float16)
    done = 0
    for start in range(0, len(paths), chunk):
        rows = slice(start, start + chunk)
        images, _ = (domain or ImageDomain()).load(paths[rows], size=size)
        for version in range(versions):
            cache[version, rows] = bottom_maps(
                net, images, config=config, variant=version, index_offset=start
            )
            done += len(images)
            if progress is not None:
                progress(done, versions * len(paths))
    return cache


@dataclass
class TrainData:
    """Training inputs: cached maps (n_versions, n, ...) or images (n, s, s, 3) uint8."""

    inputs: npt.NDArray[Any]
    y_index: npt.NDArray[np.int64]
    cached: bool


def training_inputs(
    net: FinetuneNetwork,
    *,
    config: FinetuneConfig,
    y_index: npt.NDArray[np.int64],
    train_rows: npt.NDArray[np.int64],
    val_rows: npt.NDArray[np.int64],
    images: Images | None,
    bottom_cache: Maps | None,
    progress: Progress,
) -> tuple[TrainData, npt.NDArray[Any]]:
    """(training inputs, validation inputs): the bottom's maps when only the top trains (taken
    from ``bottom_cache`` when given, else computed from ``images``), else the images."""
    if net.bottom is not None and bottom_cache is not None:
        if bottom_cache.shape[0] < config.variants + 1 or bottom_cache.shape[1] != y_index.size:
            raise ValueError(
                f"bottom_cache has shape {bottom_cache.shape}; expected "
                f"({config.variants + 1}, {y_index.size}, ...)"
            )
        versions_cached = bottom_cache[: config.variants + 1]
        data = TrainData(versions_cached[:, train_rows], y_index[train_rows], cached=True)
        return data, bottom_cache[0][val_rows]
    if images is None:
        raise ValueError("images are needed unless the bottom's maps are given (bottom_cache)")
    if net.bottom is not None:
        train_maps = _train_maps(net, images[train_rows], config=config, progress=progress)
        data = TrainData(train_maps, y_index[train_rows], cached=True)
        return data, bottom_maps(net, images[val_rows], config=config)
    return TrainData(images[train_rows], y_index[train_rows], cached=False), images[val_rows]


def _train_maps(
    net: FinetuneNetwork, images: Images, *, config: FinetuneConfig, progress: Progress
) -> Maps:
    """(1 + variants, n, h, w, c): the maps of each image and of its augmented copies."""
    versions = config.variants + 1

    def version_maps(version: int) -> Maps:
        progress(
            2 + int(18 * version / versions),
            f"frozen layers: version {version + 1}/{versions} of each image",
        )
        return bottom_maps(net, images, config=config, variant=version)

    first = version_maps(0)
    train_maps = np.zeros((versions, *first.shape), np.float16)
    train_maps[0] = first
    for version in range(1, versions):
        train_maps[version] = version_maps(version)
    return train_maps
