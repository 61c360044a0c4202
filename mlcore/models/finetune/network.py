"""The fine-tuning network (backbone -> pooling -> dropout -> dense logits), split at the cut
between the frozen bottom and the trained top, and the images it reads."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcore.models.finetune.config import FinetuneConfig

Images = npt.NDArray[np.uint8]


def _lite_block_output(backbone: Any, top_blocks: int) -> str:
    """Name of the layer whose output feeds the last ``top_blocks`` MBConv blocks."""
    names: list[str] = [layer.name for layer in backbone.layers]
    blocks = sorted(
        {int(n.split("_", 1)[0][5:]) for n in names if n.startswith("block") and "_" in n}
    )
    if not blocks:
        raise ValueError(
            f"backbone {backbone.name!r} has no EfficientNet-Lite blocks: use cut_layer= or "
            "top_blocks=None (whole network)"
        )
    first_trained = len(blocks) - top_blocks
    if first_trained <= 0:
        return "stem_relu6"
    prefix = f"block{first_trained - 1}_"
    return [n for n in names if n.startswith(prefix)][-1]


def use_mixed_precision(setting: str) -> bool:
    if setting == "off":
        return False
    if setting == "on":
        return True
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


@dataclass
class FinetuneNetwork:
    network: Any  # preprocessed image -> logits
    bottom: Any | None  # preprocessed image -> cut maps (None: whole network trains)
    top: Any  # cut maps (or preprocessed image) -> logits
    cut_layer: str | None


def build_network(
    config: FinetuneConfig,
    *,
    weights: str | Path | None = "imagenet",
    weights_dir: str | Path | None = None,
) -> FinetuneNetwork:
    """The fine-tuning network, split at the cut when only the top trains."""
    import keras

    from mlcore.features.backbones import build_backbone

    previous_policy = keras.mixed_precision.global_policy()
    if use_mixed_precision(config.mixed_precision):
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        backbone = build_backbone(
            config.backbone, weights=weights, weights_dir=weights_dir, pooling=None
        )
        x = keras.layers.GlobalAveragePooling2D(name="ft_pool")(backbone.output)
        x = keras.layers.Dropout(config.dropout, name="ft_dropout")(x)
        logits = keras.layers.Dense(len(config.classes), name="ft_logits", dtype="float32")(x)
        network = keras.Model(backbone.input, logits, name=f"finetuned_{config.backbone}")
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    cut = config.cut_layer
    if cut is None and config.top_blocks is not None:
        cut = _lite_block_output(backbone, config.top_blocks)
    for layer in network.layers:
        layer.trainable = False
    if cut is None:
        bottom, top = None, network
    else:
        cut_tensor = network.get_layer(cut).output
        bottom = keras.Model(network.input, cut_tensor, name="frozen_bottom")
        top = keras.Model(cut_tensor, logits, name="trained_top")
    trainable_layers = top.layers if bottom is not None else network.layers
    for layer in trainable_layers:
        if isinstance(layer, keras.layers.BatchNormalization) or not layer.weights:
            continue
        layer.trainable = True
    return FinetuneNetwork(network=network, bottom=bottom, top=top, cut_layer=cut)


def load_images(
    paths: Sequence[str | Path], *, size: int, preprocessing: str | Sequence[str] = "none"
) -> Images:
    """Decoded, preprocessed images (n, size, size, 3) uint8; ``preprocessing`` by name (one
    for all, or one per image)."""
    from mlcore.data.domain import preprocess_for
    from mlcore.data.preprocessing import load_rgb

    methods = [preprocessing] * len(paths) if isinstance(preprocessing, str) else preprocessing
    images = np.zeros((len(paths), size, size, 3), np.uint8)
    for i, (path, method) in enumerate(zip(paths, methods, strict=True)):
        images[i] = preprocess_for(load_rgb(path, min_size=math.ceil(size * 1.5)), method, size)
    return images


def environment_flags() -> dict[str, Any]:
    """Where training ran (for reports): GPU present, mixed precision would be used."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return {"gpus": len(gpus), "cpu_threads": os.cpu_count(), "mixed_precision": bool(gpus)}
