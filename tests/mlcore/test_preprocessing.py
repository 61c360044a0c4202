"""Fundus preprocessing: crop, resize-pad, Ben Graham filter, and the filtered-image heuristic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlcore.data.preprocessing import (
    PREPROCESSING,
    ImageLoadError,
    ben_graham,
    crop_to_fundus,
    fundus_bounding_box,
    load_rgb,
    looks_gaussian_filtered,
    preprocess_image,
    resize_pad,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _synthetic_fundus(height: int = 300, width: int = 450) -> np.ndarray:
    """A reddish disc on a black camera border, centred at column 250."""
    rows, cols = np.ogrid[:height, :width]
    disc = (rows - 150) ** 2 + (cols - 250) ** 2 <= 120**2
    image = np.zeros((height, width, 3), np.uint8)
    image[disc] = (180, 90, 40)
    image[0:3, 0:3] = (255, 255, 255)  # a hot pixel in the border must not widen the crop
    noise = np.random.default_rng(0).integers(0, 9, size=(height, width, 3), dtype=np.uint8)
    return np.where(disc[..., None], image, image + noise)


def test_the_web_facing_modules_import_without_tensorflow() -> None:
    code = (
        "import sys; import mlcore.data.preprocessing, mlcore.features.config, mlcore.features.store, "
        "mlcore.features.backbones, mlcore.features.extraction, mlcore.cli; "
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_crop_keeps_the_fundus_and_drops_the_border() -> None:
    image = _synthetic_fundus()
    top, bottom, left, right = fundus_bounding_box(image)
    # The disc spans rows 30..270 and columns 130..370; its 1-pixel tips may be trimmed.
    assert np.allclose((top, bottom, left, right), (30, 271, 130, 371), atol=2)
    cropped = crop_to_fundus(image)
    assert cropped.shape == (bottom - top, right - left, 3)
    assert cropped[cropped.shape[0] // 2, cropped.shape[1] // 2].tolist() == [180, 90, 40]


def test_crop_leaves_an_image_without_border_alone() -> None:
    grey = np.full((50, 60, 3), 128, np.uint8)
    assert crop_to_fundus(grey).shape == grey.shape
    black = np.zeros((50, 60, 3), np.uint8)
    assert crop_to_fundus(black).shape == black.shape


def test_resize_pad_keeps_the_aspect_ratio_and_centres() -> None:
    image = np.full((150, 300, 3), 200, np.uint8)
    square = resize_pad(image, 224)
    assert square.shape == (224, 224, 3) and square.dtype == np.uint8
    content_rows = np.flatnonzero(square[:, 112, 0] > 0)
    assert (content_rows[0], content_rows[-1]) == (56, 167)  # 112 rows, centred
    assert square[0, 0].tolist() == [0, 0, 0]


def test_resize_pad_accepts_greyscale_and_rgba() -> None:
    assert resize_pad(np.zeros((10, 20), np.uint8), 8).shape == (8, 8, 3)
    assert resize_pad(np.zeros((10, 20, 4), np.uint8), 8).shape == (8, 8, 3)
    with pytest.raises(ValueError, match="RGB image"):
        resize_pad(np.zeros((10, 20, 2), np.uint8), 8)


def test_ben_graham_turns_flat_colour_into_grey_128_and_masks_a_circle() -> None:
    flat = np.full((224, 224, 3), (200, 60, 30), np.uint8)
    filtered = ben_graham(flat)
    assert filtered.dtype == np.uint8
    assert np.abs(filtered[112, 112].astype(int) - 128).max() <= 1
    assert filtered[0, 0].tolist() == [128, 128, 128]  # outside the circle


def test_ben_graham_amplifies_local_contrast_and_clips() -> None:
    image = np.full((224, 224, 3), 120, np.uint8)
    image[100:104, 100:104] = 200  # a small bright lesion
    filtered = ben_graham(image)
    assert filtered[101, 101].min() == 255  # 4 x (200 - ~120) + 128 clips
    assert abs(int(filtered[60, 60, 0]) - 128) <= 2


def test_preprocessing_methods_are_the_documented_ones() -> None:
    assert set(PREPROCESSING) == {"none", "crop", "ben_graham"}
    image = _synthetic_fundus()
    for method in PREPROCESSING:
        assert preprocess_image(image, method=method, size=64).shape == (64, 64, 3)
    # "crop" fills the square with fundus, "none" keeps the black margins
    none, crop = (preprocess_image(image, method=m, size=64) for m in ("none", "crop"))
    assert (crop.max(axis=2) < 15).mean() < (none.max(axis=2) < 15).mean()


def test_an_unknown_method_lists_the_known_ones() -> None:
    with pytest.raises(LookupError, match="ben_graham, crop, none"):
        preprocess_image(np.zeros((4, 4, 3), np.uint8), method="clahe", size=4)


def test_load_rgb_honours_exif_orientation(tmp_path: Path) -> None:
    picture = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = picture.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: displayed 20 wide x 40 high
    path = tmp_path / "rotated.jpg"
    picture.save(path, exif=exif)
    assert load_rgb(path).shape == (40, 20, 3)


def test_load_rgb_names_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        load_rgb(path)


def test_a_path_and_an_array_give_the_same_pixels(tmp_path: Path) -> None:
    image = _synthetic_fundus()
    path = tmp_path / "fundus.png"
    Image.fromarray(image).save(path)
    for method in PREPROCESSING:
        from_path = preprocess_image(path, method=method, size=96)
        np.testing.assert_array_equal(from_path, preprocess_image(image, method=method, size=96))


def test_raw_photographs_decode_at_reduced_scale_without_losing_the_picture(
    raw_fundus_dir: Path,
) -> None:
    path = sorted(raw_fundus_dir.glob("*.jpg"))[0]
    fast = preprocess_image(path, method="crop", size=224)
    full = preprocess_image(load_rgb(path), method="crop", size=224)
    assert fast.shape == full.shape == (224, 224, 3)
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 3.0


def test_the_shared_dataset_looks_filtered_and_raw_photos_do_not(
    fundus_dataset_dir: Path, raw_fundus_dir: Path
) -> None:
    dataset = sorted(fundus_dataset_dir.glob("*/*.jpg"))[::150]
    assert len(dataset) >= 15
    assert all(looks_gaussian_filtered(load_rgb(p)) for p in dataset)
    raw = sorted(raw_fundus_dir.glob("*.jpg"))[:4]
    for path in raw:
        assert not looks_gaussian_filtered(preprocess_image(path, method="none", size=224))
        assert not looks_gaussian_filtered(preprocess_image(path, method="crop", size=224))
        assert looks_gaussian_filtered(preprocess_image(path, method="ben_graham", size=224))


def test_ordinary_photographs_do_not_look_filtered() -> None:
    from skimage import data

    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        assert not looks_gaussian_filtered(getattr(data, name)()), name
