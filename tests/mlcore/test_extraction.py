"""Feature extraction with the real default backbones on a few dataset images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlcore.data.preprocessing import ImageLoadError, preprocess_image
from mlcore.features.config import FeatureConfig
from mlcore.features.extraction import (
    ImageItem,
    ImageSourceError,
    compute_features,
    extract_features,
    file_sha256,
    find_images,
    image_items,
    load_features,
)
from mlcore.features.store import FeatureStore, feature_key, store_path

CONFIG = FeatureConfig(batch_size=4)  # the defaults: efficientnet_lite0 + mobilenet_v2


@pytest.fixture(scope="module")
def dataset_images(fundus_dataset_dir: Path) -> list[Path]:
    # Two per grade folder, for some variety; 10 in all.
    return [p for grade in range(5) for p in sorted(fundus_dataset_dir.glob(f"{grade}/*.jpg"))[:2]]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory, dataset_images, weights_dir: Path):
    """The first 8 images extracted into a fresh store, with the progress calls seen."""
    store_dir = tmp_path_factory.mktemp("features")
    calls: list[tuple[int, int]] = []
    items = image_items(dataset_images[:8])
    result = extract_features(
        items,
        config=CONFIG,
        store_dir=store_dir,
        weights_dir=weights_dir,
        progress=lambda done, total: calls.append((done, total)),
    )
    return store_dir, items, result, calls


def test_keys_are_the_sha256_of_the_file_bytes(dataset_images: list[Path]) -> None:
    import hashlib

    item = image_items(dataset_images[:1], variant=2)[0]
    digest = hashlib.sha256(dataset_images[0].read_bytes()).hexdigest()
    assert file_sha256(dataset_images[0]) == digest
    assert item.key == feature_key(digest, 2) and item.path == dataset_images[0]


@pytest.mark.slow
def test_it_extracts_every_backbone_into_its_own_store(extracted) -> None:
    store_dir, items, result, calls = extracted
    assert result.computed == {"efficientnet_lite0": 8, "mobilenet_v2": 8}
    assert result.reused == {"efficientnet_lite0": 0, "mobilenet_v2": 0}
    assert calls[0] == (0, 8) and calls[-1] == (8, 8)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    for name, dim in (("efficientnet_lite0", 1280), ("mobilenet_v2", 1280)):
        path = store_path(store_dir, name, "none")
        assert result.store_paths[name] == path
        store = FeatureStore(path, backbone=name, preprocessing="none", feature_dim=dim, mode="r")
        assert store.keys() == {item.key for item in items}


@pytest.mark.slow
def test_stored_features_equal_the_backbone_on_the_preprocessed_images(
    extracted, weights_dir: Path
) -> None:
    from mlcore.features.backbones import build_backbone, get_backbone

    store_dir, items, _, _ = extracted
    stored = load_features([item.key for item in items], config=CONFIG, store_dir=store_dir)
    assert stored.shape == (8, 2560) and stored.dtype == np.float32
    offset = 0
    for name in CONFIG.backbones:
        spec = get_backbone(name)
        model = build_backbone(name, weights_dir=weights_dir)
        images = np.stack(
            [preprocess_image(i.path, method="none", size=spec.input_size) for i in items]
        ).astype(np.float32)
        direct = model(spec.preprocess(images), training=False).numpy()
        block = stored[:, offset : offset + spec.feature_dim]
        np.testing.assert_allclose(block, direct, rtol=1e-4, atol=1e-4)
        assert block.std() > 0.05  # real weights, not a constant
        offset += spec.feature_dim


@pytest.mark.slow
def test_a_second_run_computes_nothing_and_new_images_only_themselves(
    extracted, dataset_images: list[Path], weights_dir: Path
) -> None:
    store_dir, items, _, _ = extracted
    again = extract_features(items, config=CONFIG, store_dir=store_dir, weights_dir=weights_dir)
    assert again.computed == {"efficientnet_lite0": 0, "mobilenet_v2": 0}
    assert again.images_processed == 0
    more = image_items(dataset_images)
    grown = extract_features(more, config=CONFIG, store_dir=store_dir, weights_dir=weights_dir)
    assert grown.computed == {"efficientnet_lite0": 2, "mobilenet_v2": 2}
    assert grown.reused == {"efficientnet_lite0": 8, "mobilenet_v2": 8}
    assert load_features([i.key for i in more], config=CONFIG, store_dir=store_dir).shape == (
        10,
        2560,
    )


@pytest.mark.slow
def test_a_backbone_added_later_is_computed_alone(
    tmp_path: Path, dataset_images: list[Path], weights_dir: Path
) -> None:
    items = image_items(dataset_images[:3])
    mobilenet_only = FeatureConfig(backbones=("mobilenet_v2",), batch_size=4)
    extract_features(items, config=mobilenet_only, store_dir=tmp_path, weights_dir=weights_dir)
    both = extract_features(items, config=CONFIG, store_dir=tmp_path, weights_dir=weights_dir)
    assert both.computed == {"efficientnet_lite0": 3, "mobilenet_v2": 0}


@pytest.mark.slow
def test_the_transform_hook_sees_each_image_and_its_key(
    tmp_path: Path, dataset_images: list[Path], weights_dir: Path
) -> None:
    import tensorflow as tf

    config = FeatureConfig(backbones=("mobilenet_v2",), batch_size=4)
    plain = image_items(dataset_images[:4])
    mirrored = image_items(dataset_images[:4], variant=1)

    def mirror_variants(image: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
        tf.debugging.assert_equal(tf.shape(image), [224, 224, 3])
        is_variant = tf.strings.regex_full_match(key, ".*#v1")
        return tf.cond(is_variant, lambda: tf.reverse(image, axis=[1]), lambda: image)

    extract_features(
        plain + mirrored,
        config=config,
        store_dir=tmp_path,
        weights_dir=weights_dir,
        transform=mirror_variants,
    )
    original = load_features([i.key for i in plain], config=config, store_dir=tmp_path)
    flipped = load_features([i.key for i in mirrored], config=config, store_dir=tmp_path)
    assert not np.allclose(original, flipped, atol=1e-3)
    reference = compute_features(
        [
            np.ascontiguousarray(preprocess_image(i.path, method="none", size=224)[:, ::-1])
            for i in plain
        ],
        config=config,
        weights_dir=weights_dir,
    )
    np.testing.assert_allclose(flipped, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_float16_storage_stays_close_to_float32(
    extracted, weights_dir: Path, tmp_path: Path
) -> None:
    store_dir, items, _, _ = extracted
    half = FeatureConfig(dtype="float16", batch_size=4)
    extract_features(items, config=half, store_dir=tmp_path, weights_dir=weights_dir)
    reference = load_features([i.key for i in items], config=CONFIG, store_dir=store_dir)
    compact = load_features([i.key for i in items], config=half, store_dir=tmp_path)
    np.testing.assert_allclose(compact, reference, rtol=2e-3, atol=2e-3)
    assert (
        store_path(tmp_path, "mobilenet_v2", "none").stat().st_size
        < store_path(store_dir, "mobilenet_v2", "none").stat().st_size
    )


@pytest.mark.slow
def test_an_unreadable_image_is_named_or_skipped(
    tmp_path: Path, dataset_images: list[Path], weights_dir: Path
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    items = image_items([dataset_images[0], broken])
    config = FeatureConfig(backbones=("mobilenet_v2",), batch_size=4)
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        extract_features(items, config=config, store_dir=tmp_path / "a", weights_dir=weights_dir)
    result = extract_features(
        items,
        config=config,
        store_dir=tmp_path / "b",
        weights_dir=weights_dir,
        skip_unreadable=True,
    )
    assert result.computed == {"mobilenet_v2": 1}
    assert [path for path, _ in result.failed] == [broken]


@pytest.mark.slow
def test_raw_photographs_go_through_the_same_pipeline(
    tmp_path: Path, raw_fundus_dir: Path, weights_dir: Path
) -> None:
    config = FeatureConfig(backbones=("mobilenet_v2",), preprocessing="crop", batch_size=2)
    items = image_items(sorted(raw_fundus_dir.glob("*.jpg"))[:2])
    extract_features(items, config=config, store_dir=tmp_path, weights_dir=weights_dir)
    stored = load_features([i.key for i in items], config=config, store_dir=tmp_path)
    direct = compute_features([i.path for i in items], config=config, weights_dir=weights_dir)
    np.testing.assert_allclose(stored, direct, rtol=1e-4, atol=1e-4)


def test_load_features_explains_a_missing_store(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="python -m mlcore extract"):
        load_features(["a" * 64], config=CONFIG, store_dir=tmp_path)


def test_find_images_reads_folders_recursively(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.jpg", "a/b/two.PNG", "three.jpeg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a/b/two.PNG", "a/one.jpg", "three.jpeg"]


def test_find_images_reads_a_csv_relative_to_its_folder(tmp_path: Path) -> None:
    (tmp_path / "2").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "2" / "x.jpg")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("filename,grade\n2/x.jpg,2\n")
    assert find_images(csv_path) == [tmp_path / "2" / "x.jpg"]
    csv_path.write_text("filename,grade\n2/x.jpg,2\n2/gone.jpg,1\n")
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        find_images(csv_path)
    csv_path.write_text("path,grade\n2/x.jpg,2\n")
    with pytest.raises(ImageSourceError, match="'filename' column"):
        find_images(csv_path)
    with pytest.raises(FileNotFoundError):
        find_images(tmp_path / "nowhere")


def test_duplicate_images_are_computed_once(tmp_path: Path, dataset_images: list[Path]) -> None:
    copy = tmp_path / "copy.jpg"
    shutil.copy(dataset_images[0], copy)
    items = image_items([dataset_images[0], copy])
    assert items[0].key == items[1].key
    result = extract_features(
        items,
        config=FeatureConfig(backbones=("vgg16",), batch_size=2),
        store_dir=tmp_path,
        weights=None,  # random weights: only the bookkeeping matters here
    )
    assert result.total == 1 and result.computed == {"vgg16": 1}
    assert isinstance(items[0], ImageItem)
