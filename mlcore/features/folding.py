"""Batch norms folded into the convolutions they follow: an inference-only copy of a Keras model
with the same outputs and fewer passes over each activation map.

Keras is imported inside the functions (the registry that uses this module must stay importable
without TensorFlow).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras


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
    is defined on first use because Keras is imported lazily. (``keras.layers.Identity`` does
    not do: the clone calls each layer with the ``mask`` argument its original received.)"""
    global _PASS_THROUGH_CLASS
    if _PASS_THROUGH_CLASS is None:
        import keras

        class PassThrough(keras.layers.Layer):  # type: ignore[misc]  # keras has no type stubs
            def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
                return inputs

        _PASS_THROUGH_CLASS = PassThrough
    return _PASS_THROUGH_CLASS(name=name)
