"""Near-duplicate photographs are one patient for every split (issue 19, item 4)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from mlcore.data.near_duplicates import (
    HASH_HEX_DIGITS,
    MAX_DISTANCE,
    hamming_distances,
    near_duplicate_labels,
    perceptual_hash,
    perceptual_hash_of_bytes,
    split_groups,
)
from mlcore.data.splits import grouped_holdout, grouped_kfold


def photo(seed: int, size: int = 224) -> Image.Image:
    """A distinct smooth random picture (blurred noise, like vessels and blotches)."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(128, 50, (14, 14, 3)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def copies_of(image: Image.Image) -> list[bytes]:
    """The same photograph re-encoded, resized, brightened, as a PNG."""
    png = io.BytesIO()
    image.save(png, "PNG")
    return [
        jpeg(image, 90),
        jpeg(image.resize((448, 448)), 95),
        jpeg(image.resize((112, 112)).resize((224, 224)), 95),
        jpeg(ImageEnhance.Brightness(image).enhance(1.08), 95),
        png.getvalue(),
    ]


def test_copies_of_a_photograph_hash_close_and_distinct_photographs_far():
    original = photo(0)
    hashes = [perceptual_hash(original)] + [
        perceptual_hash_of_bytes(c) for c in copies_of(original)
    ]
    others = [perceptual_hash(photo(seed)) for seed in range(1, 40)]
    assert all(len(h) == HASH_HEX_DIGITS for h in hashes + others)
    distances = hamming_distances(hashes + others)
    assert distances[:6, :6].max() <= MAX_DISTANCE
    assert distances[:6, 6:].min() > MAX_DISTANCE
    labels = near_duplicate_labels(hashes + others)
    assert len(set(labels[:6])) == 1 and labels[0] is not None
    assert labels[6:] == [None] * len(others)


def test_copies_never_straddle_a_split():
    """Six copies of one photograph among 60 photographs, each under its own patient (the
    registry has no idea they are one eye): every fold and hold-out keeps them together."""
    copies = [perceptual_hash(photo(0))] + [
        perceptual_hash_of_bytes(c) for c in copies_of(photo(0))
    ]
    hashes = copies + [perceptual_hash(photo(seed)) for seed in range(1, 55)]
    patients = [f"patient:{i}" for i in range(len(hashes))]
    grades = np.asarray([i % 3 for i in range(len(hashes))])
    groups = split_groups(patients, hashes)
    assert len(set(groups[:6].tolist())) == 1
    assert len(set(groups.tolist())) == len(hashes) - 5
    copy_rows = set(range(6))
    for train, test in grouped_kfold(grades, groups, n_splits=5, seed=1):
        assert copy_rows <= set(train.tolist()) or copy_rows <= set(test.tolist())
    for seed in range(5):
        train, test = grouped_holdout(grades, groups, test_fraction=0.3, seed=seed)
        assert copy_rows <= set(train.tolist()) or copy_rows <= set(test.tolist())


def test_images_without_a_hash_are_their_own_group():
    assert near_duplicate_labels(["", None, perceptual_hash(photo(1))]) == [None, None, None]
    with pytest.raises(ValueError, match="2 patients but 1 hashes"):
        split_groups(["a", "b"], ["00"])


def test_close_pairs_finds_exactly_the_pairs_the_full_matrix_finds():
    """The segment index is exact (pigeonhole), not an approximation."""
    from mlcore.data.near_duplicates import close_pairs

    rng = np.random.default_rng(7)
    base = rng.integers(0, 2, (30, 256), dtype=np.uint8)
    hashes = []
    for row in base:  # each base hash and three copies with 0..24 flipped bits
        for flips in (0, *rng.integers(0, 25, 3)):
            copy = row.copy()
            copy[rng.choice(256, flips, replace=False)] ^= 1
            hashes.append(np.packbits(copy).tobytes().hex())
    distances = hamming_distances(hashes)
    rows, cols = np.nonzero(np.triu(distances <= MAX_DISTANCE, 1))
    expected = set(zip(rows.tolist(), cols.tolist(), strict=True))
    first, second = close_pairs(hashes)
    assert set(zip(first.tolist(), second.tolist(), strict=True)) == expected
    assert len(expected) > 30


def test_the_command_lines_labels_group_copies_with_their_listed_groups(tmp_path):
    from mlcore.pipelines.labels import LabeledImages, with_near_duplicates

    paths = []
    for name, data in [("a.jpg", jpeg(photo(0), 95)), ("a-copy.jpg", jpeg(photo(0), 90))] + [
        (f"other{seed}.jpg", jpeg(photo(seed), 95)) for seed in range(1, 5)
    ]:
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths.append(tmp_path / "broken.jpg")
    listed = ["p1", "p2", "p3", "p3", "p4", "p5", "p6"]  # other2 and other3: one patient
    grouped = with_near_duplicates(LabeledImages(paths, [0] * 7, listed)).groups
    assert grouped is not None
    assert grouped[0] == grouped[1]  # the copy joins its original's group
    assert grouped[2] == grouped[3]  # a listed patient stays together
    assert len(set(grouped)) == 5
