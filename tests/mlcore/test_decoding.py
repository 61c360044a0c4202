"""Decoding for the model in worker processes (``mlcore.data.decoding``) and its use by extraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlcore.data.decoding import decoded_images, decoding_executor, default_decode_processes
from mlcore.data.preprocessing import preprocess_image
from mlcore.features.config import FeatureConfig
from mlcore.features.extraction import extract_features, image_items, load_features


@pytest.fixture(scope="module")
def some_images(fundus_dataset_dir: Path) -> list[Path]:
    return [p for grade in range(5) for p in sorted(fundus_dataset_dir.glob(f"{grade}/*.jpg"))[:2]]


@pytest.mark.parametrize("processes", [0, 2])
def test_images_come_back_in_order_and_equal_to_decoding_here(
    tmp_path: Path, some_images: list[Path], processes: int
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a photograph")
    paths = [str(p) for p in some_images[:5]] + [str(broken)] + [str(p) for p in some_images[5:]]
    decoded = list(
        decoded_images(paths, method="crop", size=96, processes=processes, chunk=3, ahead=2)
    )
    assert len(decoded) == len(paths)
    for path, (image, ok) in zip(paths, decoded, strict=True):
        if path == str(broken):
            assert not ok and image.shape == (96, 96, 3) and not image.any()
        else:
            assert ok
            np.testing.assert_array_equal(image, preprocess_image(path, method="crop", size=96))


def test_processes_come_from_the_environment_and_bad_values_are_named() -> None:
    assert default_decode_processes({"FUNDUS_DECODE_PROCESSES": "3"}) == 3
    assert default_decode_processes({"FUNDUS_DECODE_PROCESSES": "0"}) == 0
    assert default_decode_processes({}) == 0  # threads unless asked (see the docstring)
    with pytest.raises(ValueError, match="FUNDUS_DECODE_PROCESSES must be an integer"):
        default_decode_processes({"FUNDUS_DECODE_PROCESSES": "two"})
    with pytest.raises(ValueError, match=">= 0"):
        default_decode_processes({"FUNDUS_DECODE_PROCESSES": "-1"})


def test_zero_processes_decode_in_threads_and_the_process_pool_is_reused() -> None:
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    assert isinstance(decoding_executor(0), ThreadPoolExecutor)
    pool = decoding_executor(2)
    assert isinstance(pool, ProcessPoolExecutor)
    assert decoding_executor(2) is pool


def test_features_are_the_same_whether_decoded_in_processes_or_threads(
    tmp_path: Path, some_images: list[Path], weights_dir: Path
) -> None:
    config = FeatureConfig(backbones=("mobilenet_v2",), batch_size=4)
    items = image_items(some_images)
    keys = [item.key for item in items]
    for processes in (0, 2):
        store = tmp_path / f"p{processes}"
        result = extract_features(
            items, config=config, store_dir=store, weights_dir=weights_dir,
            decode_processes=processes,
        )  # fmt: skip
        assert result.computed == {"mobilenet_v2": len(items)}
    np.testing.assert_array_equal(
        load_features(keys, config=config, store_dir=tmp_path / "p0"),
        load_features(keys, config=config, store_dir=tmp_path / "p2"),
    )
