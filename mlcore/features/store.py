"""Incremental, crash-safe HDF5 feature store: one file per (backbone, preprocessing).

Layout of ``<backbone>__<preprocessing>.h5``: dataset ``keys`` (N,) of strings and dataset
``features`` (N, feature_dim) in float32 or float16, with the attributes ``backbone``,
``preprocessing``, ``feature_dim``, ``dtype`` and ``format_version``.

Why not append to the HDF5 file in place: HDF5 has no journal, so a writer killed while the
library is updating its metadata can leave a file that no longer opens. Instead the main file is
never modified, only *replaced* atomically:

- ``put`` writes each batch as a small, complete segment file in ``<file>.journal/`` (written to
  a temporary name, then renamed: a segment either exists whole or not at all);
- ``compact`` (on ``close`` and whenever the journal grows past half the main file) writes a new
  main file holding the old rows plus the journal's, renames it over the old one, and only then
  deletes the merged segments. A crash before the rename keeps the old file and the segments; a
  crash after it leaves segments whose keys are already in the main file, which are ignored and
  cleaned up by the next compaction. The main file is fsynced before its rename, so it also
  survives an operating-system crash; segments are not (an fsync per batch would stall
  extraction), so such a crash can at worst lose the batches written since the last compaction,
  which are recomputed.

So a killed extraction leaves the store readable with every batch that finished, and the next
run computes only what is missing. One writer at a time: a writer holds an exclusive ``fcntl``
lock on ``<file>.writer.lock`` while open (a second writer waits). Compaction takes an exclusive
lock on ``<file>.lock`` and readers a shared one while they read, so a reader never sees a
segment vanish under it; readers never wait for a whole extraction.

This module imports numpy and h5py only (the web process reads features without TensorFlow).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np

FORMAT_VERSION = 1
STORAGE_DTYPES = ("float32", "float16")
_KEY_PATTERN = re.compile(r"^(?P<sha>[0-9a-f]{64})(?:#v(?P<variant>[1-9][0-9]*))?$")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
_SEGMENT_SUFFIX = ".h5"
_TEMP_SUFFIX = ".tmp"
# Compact once the journal holds at least this many rows and at least half as many as the main
# file: copying stays linear in the final size overall, and the journal stays a few dozen files.
_COMPACT_MIN_ROWS = 2048
_COPY_CHUNK_ROWS = 1024  # rows copied or read at a time: bounds memory (5 MiB at 1280-d)


class StoreMismatchError(ValueError):
    """The store on disk was written for another backbone, preprocessing, dimension or dtype."""


def feature_key(sha256: str, variant: int = 0) -> str:
    """Key of an image's features: its sha256, plus ``#v<variant>`` for augmented copies."""
    sha256 = sha256.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    if variant < 0:
        raise ValueError(f"variant must be >= 0, not {variant}")
    return sha256 if variant == 0 else f"{sha256}#v{variant}"


def parse_feature_key(key: str) -> tuple[str, int]:
    """Inverse of ``feature_key``: ``(sha256, variant)``."""
    match = _KEY_PATTERN.match(key)
    if match is None:
        raise ValueError(f"not a feature key (<sha256> or <sha256>#v<n>): {key!r}")
    return match["sha"], int(match["variant"] or 0)


def store_path(store_dir: str | Path, backbone: str, preprocessing: str) -> Path:
    """The store file of one backbone x preprocessing inside ``store_dir``."""
    for what, value in (("backbone", backbone), ("preprocessing", preprocessing)):
        if not _NAME_PATTERN.match(value):
            raise ValueError(f"{what} name {value!r} is not usable in a file name")
    return Path(store_dir) / f"{backbone}__{preprocessing}.h5"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_h5_atomically(
    final_path: Path,
    attrs: dict[str, object],
    blocks: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    feature_dim: int,
    dtype: str,
    total_rows: int,
    durable: bool = True,
) -> None:
    """Write ``blocks`` of (keys, features) to ``final_path`` via a temp file and a rename.

    The rename alone makes the write atomic for a killed process (the page cache survives it);
    ``durable`` adds the fsyncs that also survive an operating-system crash or power loss.
    """
    temp_path = final_path.with_name(f"{final_path.name}.{uuid.uuid4().hex}{_TEMP_SUFFIX}")
    try:
        with h5py.File(temp_path, "w") as file:
            for name, value in attrs.items():
                file.attrs[name] = value
            chunk_rows = max(1, min(total_rows, 1024))
            keys_ds = file.create_dataset(
                "keys",
                shape=(total_rows,),
                dtype=h5py.string_dtype("utf-8"),
                chunks=(chunk_rows,) if total_rows else None,
            )
            features_ds = file.create_dataset(
                "features",
                shape=(total_rows, feature_dim),
                dtype=dtype,
                chunks=(chunk_rows, feature_dim) if total_rows else None,
            )
            row = 0
            for keys, features in blocks:
                keys_ds[row : row + len(keys)] = keys
                features_ds[row : row + len(keys)] = features
                row += len(keys)
            if row != total_rows:
                raise AssertionError(f"wrote {row} rows, expected {total_rows}")
        if durable:
            with open(temp_path, "rb+") as raw:
                os.fsync(raw.fileno())
        os.replace(temp_path, final_path)
        if durable:
            _fsync_dir(final_path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp_path.unlink()
        raise


def _read_keys(file: h5py.File) -> list[str]:
    return [k.decode() if isinstance(k, bytes) else str(k) for k in file["keys"][:]]


class FeatureStore:
    """Features of one backbone x preprocessing, keyed by ``feature_key``.

    ``mode="a"`` (default) creates the file if needed and allows ``put``; ``mode="r"`` only reads
    (and never writes to the folder). Opening a store written for another backbone,
    preprocessing, feature dimension or storage dtype raises ``StoreMismatchError``.
    ``put`` ignores keys already stored (features are a pure function of the image bytes and
    the configuration), so re-running an extraction is idempotent.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        backbone: str,
        preprocessing: str,
        feature_dim: int,
        dtype: str = "float32",
        mode: str = "a",
    ) -> None:
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, not {dtype!r}")
        if mode not in ("a", "r"):
            raise ValueError(f"mode must be 'a' or 'r', not {mode!r}")
        if feature_dim < 1:
            raise ValueError(f"feature_dim must be positive, not {feature_dim}")
        self.path = Path(path)
        self.backbone = backbone
        self.preprocessing = preprocessing
        self.feature_dim = int(feature_dim)
        self.dtype = dtype
        self.mode = mode
        self.journal_dir = self.path.with_name(self.path.name + ".journal")
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._writer_lock_path = self.path.with_name(self.path.name + ".writer.lock")
        self._writer_fd: int | None = None
        # key -> (file, row); file is None for the main file, else a segment path
        self._index: dict[str, tuple[Path | None, int]] = {}
        self._main_rows = 0
        self._journal_rows = 0
        self._segments: list[Path] = []
        self._closed = False
        if mode == "a":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer_fd = os.open(self._writer_lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._writer_fd, fcntl.LOCK_EX)
            try:
                with self._exclusive_lock():
                    self._clean_temp_files()
                    if not self.path.exists():
                        self._write_empty_main()
                    self._load_index()
            except BaseException:
                self._release_lock()
                raise
        else:
            if not self.path.exists():
                raise FileNotFoundError(f"no feature store at {self.path}")
            with self._shared_lock():
                self._load_index()

    # -- metadata ----------------------------------------------------------------------------
    @property
    def _attrs(self) -> dict[str, object]:
        return {
            "backbone": self.backbone,
            "preprocessing": self.preprocessing,
            "feature_dim": self.feature_dim,
            "dtype": self.dtype,
            "format_version": FORMAT_VERSION,
        }

    def _check_attrs(self, file: h5py.File, where: Path) -> None:
        found = {name: file.attrs.get(name) for name in self._attrs}
        for name, expected in self._attrs.items():
            value = found[name]
            if isinstance(value, bytes):
                value = value.decode()
            if isinstance(value, np.generic):
                value = value.item()
            if value != expected:
                raise StoreMismatchError(
                    f"feature store {where} holds {name}={value!r} but {expected!r} was asked "
                    f"for; use another store folder (or delete the file to recompute)"
                )
        if "keys" not in file or "features" not in file:
            raise StoreMismatchError(f"{where} is not a feature store (no keys/features datasets)")

    # -- locking -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _shared_lock(self) -> Iterator[None]:
        try:
            fd = os.open(self._lock_path, os.O_RDONLY)
        except OSError:  # no lock file (read-only copy of a store): nobody compacts there
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _exclusive_lock(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _release_lock(self) -> None:
        if self._writer_fd is not None:
            os.close(self._writer_fd)
            self._writer_fd = None

    # -- loading -----------------------------------------------------------------------------
    def _clean_temp_files(self) -> None:
        """Remove temporary files of a writer that died (we hold the exclusive lock)."""
        folders = [self.path.parent, self.journal_dir]
        for folder in folders:
            if not folder.is_dir():
                continue
            for temp in folder.glob(f"*{_TEMP_SUFFIX}"):
                if temp.name.startswith(self.path.name) or folder == self.journal_dir:
                    with contextlib.suppress(FileNotFoundError):
                        temp.unlink()

    def _write_empty_main(self) -> None:
        _write_h5_atomically(
            self.path,
            self._attrs,
            [],
            feature_dim=self.feature_dim,
            dtype=self.dtype,
            total_rows=0,
        )

    def _load_index(self) -> None:
        self._index.clear()
        try:
            file = h5py.File(self.path, "r")
        except OSError as error:
            raise OSError(f"feature store {self.path} cannot be read as HDF5: {error}") from error
        with file:
            self._check_attrs(file, self.path)
            keys = _read_keys(file)
        self._index.update((key, (None, row)) for row, key in enumerate(keys))
        self._main_rows = len(keys)
        self._segments = []
        self._journal_rows = 0
        if self.journal_dir.is_dir():
            for segment in sorted(self.journal_dir.glob(f"*{_SEGMENT_SUFFIX}")):
                try:
                    file = h5py.File(segment, "r")
                except OSError:
                    # Only an OS crash right after an (unsynced) segment write can leave one
                    # unreadable: its batch is simply recomputed; a writer removes it.
                    warnings.warn(f"ignoring unreadable feature segment {segment}", stacklevel=2)
                    if self.mode == "a":
                        segment.unlink(missing_ok=True)
                    continue
                with file:
                    self._check_attrs(file, segment)
                    segment_keys = _read_keys(file)
                self._segments.append(segment)
                for row, key in enumerate(segment_keys):
                    if key not in self._index:
                        self._index[key] = (segment, row)
                        self._journal_rows += 1

    # -- public API --------------------------------------------------------------------------
    def keys(self) -> set[str]:
        return set(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._index))

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys not stored yet, in the given order, without duplicates."""
        seen: set[str] = set()
        result = []
        for key in keys:
            if key not in self._index and key not in seen:
                seen.add(key)
                result.append(key)
        return result

    def put(self, keys: Sequence[str], features: np.ndarray) -> int:
        """Store ``features[i]`` under ``keys[i]``; returns how many rows were new."""
        self._check_open(writing=True)
        keys = [str(k) for k in keys]
        features = np.asarray(features)
        if features.ndim != 2 or features.shape != (len(keys), self.feature_dim):
            raise ValueError(
                f"expected features of shape ({len(keys)}, {self.feature_dim}), "
                f"got {features.shape}"
            )
        if not np.all(np.isfinite(features)):
            raise ValueError("features contain NaN or infinity; refusing to store them")
        new_rows: dict[str, int] = {}
        for row, key in enumerate(keys):
            if not key:
                raise ValueError("empty feature key")
            if key not in self._index and key not in new_rows:
                new_rows[key] = row
        if not new_rows:
            return 0
        rows = np.fromiter(new_rows.values(), dtype=np.int64)
        block_keys = np.asarray(list(new_rows), dtype=object)
        block = features[rows].astype(self.dtype)
        self.journal_dir.mkdir(exist_ok=True)
        # Names sort in write order, so a later segment never shadows an earlier one's key.
        sequence = self._main_rows + self._journal_rows
        segment = self.journal_dir / f"{sequence:012d}-{uuid.uuid4().hex}{_SEGMENT_SUFFIX}"
        # No fsync per batch: it would stall the forward passes, and a segment torn by an OS
        # crash only loses one batch of recomputable features (it is skipped when loading).
        _write_h5_atomically(
            segment,
            self._attrs,
            [(block_keys, block)],
            feature_dim=self.feature_dim,
            dtype=self.dtype,
            total_rows=len(block_keys),
            durable=False,
        )
        self._segments.append(segment)
        for row, key in enumerate(block_keys):
            self._index[key] = (segment, row)
        self._journal_rows += len(block_keys)
        if self._journal_rows >= max(_COMPACT_MIN_ROWS, self._main_rows // 2):
            self.compact()
        return len(block_keys)

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """Features of ``keys`` as float32 (len(keys), feature_dim); KeyError names the
        missing keys."""
        self._check_open(writing=False)
        keys = list(keys)
        absent = [key for key in keys if key not in self._index]
        if absent:
            shown = ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else "")
            raise KeyError(f"{len(absent)} key(s) not in feature store {self.path}: {shown}")
        with self._shared_lock():
            try:
                return self._read(keys)
            except FileNotFoundError:
                # Another process compacted the journal since we indexed it: the rows moved
                # into the main file (main rows never move), so re-index and read again.
                self._load_index()
                return self._read(keys)

    def _read(self, keys: list[str]) -> np.ndarray:
        result = np.empty((len(keys), self.feature_dim), dtype=np.float32)
        by_file: dict[Path | None, list[tuple[int, int]]] = {}
        for position, key in enumerate(keys):
            source, row = self._index[key]
            by_file.setdefault(source, []).append((position, row))
        for source, pairs in by_file.items():
            positions = np.asarray([p for p, _ in pairs], dtype=np.int64)
            rows = np.asarray([r for _, r in pairs], dtype=np.int64)
            file_path = self.path if source is None else source
            if not file_path.exists():
                raise FileNotFoundError(file_path)
            with h5py.File(file_path, "r") as file:
                result[positions] = _read_rows(file["features"], rows)
        return result

    def compact(self) -> None:
        """Merge the journal into a new main file (atomically replacing the old one)."""
        self._check_open(writing=True)
        if not self._segments:
            return
        journal_keys = [k for k, (src, _) in self._index.items() if src is not None]
        total = self._main_rows + len(journal_keys)
        # The temp file is created next to the main one (same filesystem, so rename is atomic).
        with self._exclusive_lock():
            with h5py.File(self.path, "r") as main:
                _write_h5_atomically(
                    self.path,
                    self._attrs,
                    self._compaction_blocks(main, journal_keys),
                    feature_dim=self.feature_dim,
                    dtype=self.dtype,
                    total_rows=total,
                )
            for segment in self._segments:
                with contextlib.suppress(FileNotFoundError):
                    segment.unlink()
            with contextlib.suppress(OSError):
                self.journal_dir.rmdir()
            self._load_index()

    def _compaction_blocks(
        self, main: h5py.File, journal_keys: list[str]
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # Bounded memory: copy the main file and each segment in chunks.
        for start in range(0, self._main_rows, _COPY_CHUNK_ROWS):
            stop = min(start + _COPY_CHUNK_ROWS, self._main_rows)
            keys = main["keys"][start:stop]
            yield keys, main["features"][start:stop]
        by_segment: dict[Path, list[tuple[str, int]]] = {}
        for key in journal_keys:
            segment, row = self._index[key]
            assert segment is not None
            by_segment.setdefault(segment, []).append((key, row))
        for segment, pairs in by_segment.items():
            with h5py.File(segment, "r") as file:
                rows = np.asarray([r for _, r in pairs], dtype=np.int64)
                yield (
                    np.asarray([k for k, _ in pairs], dtype=object),
                    _read_rows(file["features"], rows),
                )

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self.mode == "a" and self._segments:
                self.compact()
        finally:
            self._closed = True
            self._release_lock()

    def _check_open(self, *, writing: bool) -> None:
        if self._closed:
            raise ValueError(f"feature store {self.path} is closed")
        if writing and self.mode != "a":
            raise ValueError(f"feature store {self.path} was opened read-only")

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Release the lock of a store that was never closed; do not compact from a finaliser.
        self._release_lock()

    def __repr__(self) -> str:
        return (
            f"FeatureStore({str(self.path)!r}, backbone={self.backbone!r}, "
            f"preprocessing={self.preprocessing!r}, keys={len(self)}, dtype={self.dtype!r})"
        )


def _read_rows(dataset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """Rows of ``dataset`` in the order of ``rows``, as float32.

    Reads contiguous windows of at most ``_COPY_CHUNK_ROWS`` rows that contain requested rows
    (much faster than h5py point selections, and memory stays bounded by the window).
    """
    out = np.empty((rows.size, dataset.shape[1]), dtype=np.float32)
    if rows.size == 0:
        return out
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    start_index = 0
    while start_index < sorted_rows.size:
        window_start = int(sorted_rows[start_index])
        window_stop = min(window_start + _COPY_CHUNK_ROWS, dataset.shape[0])
        stop_index = int(np.searchsorted(sorted_rows, window_stop, side="left"))
        block = dataset[window_start:window_stop]
        selected = sorted_rows[start_index:stop_index] - window_start
        out[order[start_index:stop_index]] = block[selected]
        start_index = stop_index
    return out
