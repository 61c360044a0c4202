"""Near-duplicate photographs as one patient: a perceptual hash per image and the groups it gives.

Copies of one photograph (re-encoded, resized, re-exported, slightly brightened) must never sit
on both sides of a split, or a model is scored on pictures it trained on. Without patient ids
every image would be its own group; :func:`near_duplicate_labels` groups the photographs whose
perceptual hashes are close, and :func:`split_groups` merges that with the patients, so every
split (cross-validation, the fine-tune hold-out, the head's inner split) keeps them together.

The hash is a DCT hash (pHash) widened to 256 bits: greyscale, 64 x 64, 2-D DCT, the 16 x 16
low frequencies above the DC row and column compared with their median; 64 hex digits. The
classic 64-bit pHash does not separate the shared set's filtered pictures (their low
frequencies are the same stretched fundus disc: distinct photographs 2 bits apart). Numpy,
scipy and Pillow only (the web process computes it at import).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image

from mlcore.data.splits import merge_groups

HASH_BITS = 256
HASH_HEX_DIGITS = HASH_BITS // 4
# Hamming distance at or below which two photographs count as the same picture, measured on the
# shared set (README, "Honest accuracy"): see there for the copies caught and distinct pairs.
MAX_DISTANCE = 16


def perceptual_hash(image: npt.NDArray[np.uint8] | Image.Image) -> str:
    """The 256-bit DCT hash of an RGB or greyscale image, as 64 hex digits."""
    from scipy.fft import dctn

    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    small = picture.convert("L").resize((64, 64), Image.Resampling.LANCZOS)
    low = dctn(np.asarray(small, dtype=np.float64), norm="ortho")[1:17, 1:17].ravel()
    return np.packbits(low > np.median(low)).tobytes().hex()


def perceptual_hash_of_bytes(data: bytes) -> str:
    """The hash of an encoded image file (JPEG decoded at reduced scale: the hash needs 64 px)."""
    with Image.open(io.BytesIO(data)) as picture:
        picture.draft("RGB", (256, 256))
        return perceptual_hash(picture.convert("RGB"))


def hamming_distances(hashes: Sequence[str]) -> npt.NDArray[np.int64]:
    """All pairwise Hamming distances (n, n) of hex hashes."""
    bits = _bits(hashes).astype(np.float32)
    # distance = ones(a) + ones(b) - 2 * common ones (exact in float32 up to 2**24 bits)
    ones = bits.sum(axis=1)
    distances = ones[:, None] + ones[None, :] - 2.0 * (bits @ bits.T)
    return np.asarray(np.rint(distances), dtype=np.int64)


def _bits(hashes: Sequence[str]) -> npt.NDArray[np.uint8]:
    raw = np.frombuffer(b"".join(bytes.fromhex(h) for h in hashes), dtype=np.uint8)
    return np.unpackbits(raw.reshape(len(hashes), -1), axis=1)


def close_pairs(
    hashes: Sequence[str], *, max_distance: int = MAX_DISTANCE
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(i, j) with i < j for every pair of hashes within ``max_distance`` bits, without the
    all-pairs matrix (100,000 images would need 40 GB): the bits are cut into
    ``max_distance + 1`` segments, and two hashes that close agree on at least one whole
    segment (pigeonhole), so only images sharing a segment's value are compared."""
    bits = _bits(hashes)
    n, width = bits.shape
    found_i: list[npt.NDArray[np.int64]] = []
    found_j: list[npt.NDArray[np.int64]] = []
    for segment in np.array_split(np.arange(width), min(width, max_distance + 1)):
        keys = bits[:, segment].astype(np.int64) @ (1 << np.arange(segment.size, dtype=np.int64))
        order = np.argsort(keys, kind="stable")
        buckets = np.split(order, np.flatnonzero(np.diff(keys[order])) + 1)
        for bucket in (b for b in buckets if b.size > 1):
            first, second = np.triu_indices(bucket.size, 1)
            found_i.append(bucket[first])
            found_j.append(bucket[second])
    if not found_i:
        empty = np.zeros(0, np.int64)
        return empty, empty
    pairs = np.unique(
        np.sort(np.stack([np.concatenate(found_i), np.concatenate(found_j)], axis=1), axis=1),
        axis=0,
    )
    distances = np.concatenate(
        [
            (bits[pairs[s : s + 65536, 0]] != bits[pairs[s : s + 65536, 1]]).sum(axis=1)
            for s in range(0, len(pairs), 65536)
        ]
    )
    close = pairs[distances <= max_distance]
    return close[:, 0].astype(np.int64), close[:, 1].astype(np.int64)


def near_duplicate_labels(
    hashes: Sequence[str | None], *, max_distance: int = MAX_DISTANCE
) -> list[str | None]:
    """A group label per image: images within ``max_distance`` bits of each other (transitively)
    share one; an image with no close neighbour, or no hash (``None`` or ""), gets ``None``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    known = [i for i, h in enumerate(hashes) if h]
    labels: list[str | None] = [None] * len(hashes)
    if len(known) < 2:
        return labels
    first, second = close_pairs([str(hashes[i]) for i in known], max_distance=max_distance)
    graph = coo_matrix(
        (np.ones(first.size, np.int8), (first, second)), shape=(len(known), len(known))
    )
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    for k, i in enumerate(known):
        if sizes[component[k]] > 1:
            labels[i] = f"near:{component[k]}"
    return labels


def split_groups(
    patients: Sequence[object], hashes: Sequence[str | None], *, max_distance: int = MAX_DISTANCE
) -> npt.NDArray[np.int64]:
    """One group id per image for every split: the patient, merged with its near-duplicates
    (a photograph uploaded twice under two patients pulls both patients to one side)."""
    if len(patients) != len(hashes):
        raise ValueError(f"{len(patients)} patients but {len(hashes)} hashes")
    return merge_groups(list(patients), near_duplicate_labels(hashes, max_distance=max_distance))
