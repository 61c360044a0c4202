"""Feature shards: small, immutable HDF5 files of (keys, features) that one writer produces.

A distributed extraction writes one shard per chunk of images and backbone, then uploads it to
an object storage; a manifest elsewhere (grading's database) maps each key to its shard and row.
Unlike ``FeatureStore`` a shard is never appended to: it is written whole under a temporary
name and renamed, so a reader only ever sees a complete file, and concurrent writers never share
a file. Layout: datasets ``keys`` (N,) and ``features`` (N, feature_dim), attributes
``backbone``, ``preprocessing``, ``dtype``, ``feature_dim`` and ``format_version``.

This module imports numpy and h5py only.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt

SHARD_FORMAT_VERSION = 1


class ShardError(ValueError):
    """A shard is unreadable, or holds another configuration than the one asked for."""


def shard_config_key(backbone: str, preprocessing: str, dtype: str) -> str:
    """The configuration a shard's features belong to (also the manifest's and folder's key)."""
    return f"{backbone}__{preprocessing}__{dtype}"


def write_shard(
    path: str | Path,
    keys: Sequence[str],
    features: npt.NDArray[np.floating],
    *,
    backbone: str,
    preprocessing: str,
    dtype: str,
) -> Path:
    """Write ``features`` (len(keys), feature_dim) of ``keys`` to ``path`` atomically."""
    path = Path(path)
    if features.ndim != 2 or features.shape[0] != len(keys):
        raise ShardError(f"{len(keys)} keys but features of shape {features.shape}")
    if len(set(keys)) != len(keys):
        raise ShardError("a shard holds each key once")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with h5py.File(temporary, "w") as file:
            file.attrs["backbone"] = backbone
            file.attrs["preprocessing"] = preprocessing
            file.attrs["dtype"] = dtype
            file.attrs["feature_dim"] = int(features.shape[1])
            file.attrs["format_version"] = SHARD_FORMAT_VERSION
            file.create_dataset("keys", data=list(keys), dtype=h5py.string_dtype("utf-8"))
            file.create_dataset("features", data=features.astype(dtype))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    return path


def read_shard_rows(
    path: str | Path, rows: Sequence[int], *, backbone: str, preprocessing: str, dtype: str
) -> tuple[list[str], npt.NDArray[np.float32]]:
    """(keys, float32 features) of ``rows`` of the shard at ``path``; ``ShardError`` when it
    was written for another configuration or lacks a row."""
    try:
        with h5py.File(path, "r") as file:
            expected = {"backbone": backbone, "preprocessing": preprocessing, "dtype": dtype}
            found = {name: str(file.attrs.get(name, "")) for name in expected}
            if found != expected:
                raise ShardError(f"shard {path} holds {found}, not {expected}")
            n_rows = int(file["keys"].shape[0])
            wanted = np.asarray(rows, dtype=np.int64)
            if wanted.size and (wanted.min() < 0 or wanted.max() >= n_rows):
                raise ShardError(f"shard {path} has {n_rows} rows; asked for {sorted(rows)}")
            order = np.argsort(wanted)
            sorted_rows = wanted[order]
            keys_sorted = file["keys"][sorted_rows] if wanted.size else np.array([])
            features_sorted = (
                file["features"][sorted_rows].astype(np.float32)
                if wanted.size
                else np.zeros((0, int(file.attrs["feature_dim"])), dtype=np.float32)
            )
    except OSError as error:
        raise ShardError(f"shard {path} is unreadable: {error}") from error
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    keys = [k.decode() if isinstance(k, bytes) else str(k) for k in keys_sorted[inverse]]
    return keys, np.ascontiguousarray(features_sorted[inverse])
