"""Class activation maps (CAM, Zhou et al. 2016) for the head on global-average-pooled features.

Each backbone ends in global average pooling, and the head is (standardisation ->) Dense, so the
logit of grade c is an average over positions of ``sum_d maps[i, j, d] * w[d, c]`` plus a
constant. The map for grade c is that sum before averaging. Two details of this head:

- the standardisation is folded into the kernel (``w = W / scale``; the mean only shifts the
  constant), see :meth:`HeadClassifier.effective_weights`;
- the features are several backbones concatenated: each backbone's last conv maps are weighted
  by *its* slice of the kernel, brought to one square grid and summed.

The map is computed on the square model input and mapped back onto the original photograph
(undoing the crop-to-fundus and the resize/pad or stretch), so it has the image's shape.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mlcore.data.domain import input_geometry, preprocess_for
from mlcore.data.preprocessing import load_rgb
from mlcore.models.artifact import ModelArtifact, load_artifact
from mlcore.models.finetune import FinetunedModel
from mlcore.models.finetuned import NO_FLIPS, flipped
from mlcore.pipelines.domain_features import image_domain


@dataclass
class CamResult:
    """``cam``: float32 (H, W) in 0..1 over the original image; ``grade``: the grade mapped;
    ``predicted_grade`` / ``probabilities``: the model's output for this image (scale order)."""

    cam: np.ndarray
    grade: int
    predicted_grade: int
    probabilities: list[float]
    image: np.ndarray
    preprocessing: str


def _resize_float(array: np.ndarray, height: int, width: int) -> np.ndarray:
    image = Image.fromarray(np.asarray(array, dtype=np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


@functools.lru_cache(maxsize=4)
def _conv_model(name: str, weights: Any, weights_dir: Path | None) -> Any:
    """Backbone without pooling, built once per process (a worker maps many images)."""
    from mlcore.features.backbones import build_backbone

    return build_backbone(name, weights=weights, weights_dir=weights_dir, pooling=None)


def _finetuned_conv_model(network: Any) -> Any:
    """The fine-tuned network up to its last feature maps (the input of its pooling)."""
    import keras

    return keras.Model(network.input, network.get_layer("ft_pool").input)


def _view_maps(conv: Any, spec: Any, square: np.ndarray, flip: int) -> np.ndarray:
    """The last maps (h, w, c) of ``square`` seen through mirror ``flip``, mirrored back so that
    every view's maps line up with the image."""
    import tensorflow as tf

    view = np.ascontiguousarray(flipped(spec.preprocess(square[None]), flip))
    maps = conv(tf.constant(view), training=False).numpy()
    if maps.ndim != 4 or maps.shape[-1] != spec.feature_dim:
        raise ValueError(
            f"backbone {spec.name!r} with pooling=None gave maps of shape {maps.shape[1:]}, "
            f"expected (h, w, {spec.feature_dim})"
        )
    return np.asarray(flipped(maps, flip)[0])


def class_activation_map(
    model: ModelArtifact | str | Path,
    image_path: str | Path,
    *,
    grade: int | None = None,
    weights_dir: str | Path | None = None,
    weights: str | Path | None = "imagenet",
) -> CamResult:
    """CAM of ``grade`` (default: the predicted grade) for one image file."""

    from mlcore.features.backbones import get_backbone
    from mlcore.features.config import default_weights_dir

    artifact = model if isinstance(model, ModelArtifact) else load_artifact(model)
    classifier = artifact.classifier
    image = load_rgb(image_path)
    # Decided as prediction decides it (the same decode and check), so both see one picture.
    method = image_domain(artifact).method_for(image_path)
    weights_folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    if isinstance(classifier, FinetunedModel):
        # A fine-tuned network ends in pooling -> dense too: its own last maps and dense layer.
        dense = classifier.network_.get_layer("ft_logits")
        kernel, bias = (w.astype(np.float64) for w in dense.get_weights())
    else:
        kernel, bias = classifier.effective_weights()

    specs = [get_backbone(name) for name in artifact.feature_config.backbones]
    grid = max(spec.input_size for spec in specs)
    squares = [preprocess_for(image, method, s.input_size).astype(np.float32) for s in specs]
    if isinstance(classifier, FinetunedModel):
        convs = [_finetuned_conv_model(classifier.network_)]
    else:
        saved = None if weights is None else str(weights)
        convs = [_conv_model(spec.name, saved, weights_folder) for spec in specs]
    # A fine-tuned model grades the mean over its mirror flips: each flip's maps are mirrored
    # back and averaged, and the probabilities are averaged as its predict_proba does.
    flips = classifier.flips if isinstance(classifier, FinetunedModel) else NO_FLIPS
    views, probas = [], []
    for flip in flips:
        maps = [_view_maps(c, s, q, flip) for c, s, q in zip(convs, specs, squares, strict=True)]
        views.append(maps)
        # Probabilities from the same forward pass, so the map and the grade shown agree;
        # calibrated like the model's own predict_proba, so the grade decoded is the one shown.
        logits = np.concatenate([m.mean(axis=(0, 1)) for m in maps]) @ kernel + bias
        logits = logits / float(getattr(classifier, "temperature_", 1.0) or 1.0)
        logits -= logits.max()
        probas.append(np.exp(logits) / np.exp(logits).sum())
    maps_per_backbone = [np.mean(per_flip, axis=0) for per_flip in zip(*views, strict=True)]
    proba = np.mean(probas, axis=0)
    predicted = int(classifier.decode(proba[None])[0])
    target = predicted if grade is None else int(grade)
    if target not in artifact.classes:
        raise ValueError(f"grade {target} is not on the model's scale {artifact.classes}")
    column = artifact.classes.index(target)

    cam_square = np.zeros((grid, grid), np.float32)
    offset = 0
    for spec, maps in zip(specs, maps_per_backbone, strict=True):
        weights_slice = kernel[offset : offset + spec.feature_dim, column]
        offset += spec.feature_dim
        cam_square += _resize_float(maps @ weights_slice, grid, grid)

    box, (top, new_height, left, new_width) = input_geometry(image, method, grid)
    inside = cam_square[top : top + new_height, left : left + new_width]
    cam = np.full(image.shape[:2], np.nan, np.float32)
    cam[box[0] : box[1], box[2] : box[3]] = _resize_float(inside, box[1] - box[0], box[3] - box[2])
    low, high = np.nanmin(cam), np.nanmax(cam)
    cam = (cam - low) / (high - low) if high > low else np.zeros_like(cam)
    cam = np.nan_to_num(cam, nan=0.0)  # outside the cropped fundus: no activation
    return CamResult(
        cam=cam.astype(np.float32),
        grade=target,
        predicted_grade=predicted,
        probabilities=[float(p) for p in proba],
        image=image,
        preprocessing=method,
    )


def render_overlay(
    image: np.ndarray,
    cam: np.ndarray,
    out_path: str | Path,
    *,
    alpha: float = 0.45,
    max_side: int | None = 1024,
    colormap: str = "jet",
) -> Path:
    """Blend the CAM (0..1, image shape) as a colour map over the photo and save a PNG.

    ``max_side`` scales large photographs down (a 4288 px overlay would be ~20 MB).
    """
    from matplotlib import colormaps

    image = np.asarray(image, dtype=np.uint8)
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != image.shape[:2]:
        raise ValueError(f"cam shape {cam.shape} does not match the image {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    height, width = cam.shape
    if max_side is not None and max(height, width) > max_side:
        scale = max_side / max(height, width)
        height, width = max(1, round(height * scale)), max(1, round(width * scale))
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))
        cam = _resize_float(cam, height, width)
    heat = colormaps[colormap](np.clip(cam, 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * heat
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.round(blended), 0, 255).astype(np.uint8)).save(
        out_path, format="PNG"
    )
    return out_path


def cam_overlay_png(
    model: ModelArtifact | str | Path,
    image_path: str | Path,
    out_path: str | Path,
    *,
    grade: int | None = None,
    weights_dir: str | Path | None = None,
    alpha: float = 0.45,
    max_side: int | None = 1024,
) -> CamResult:
    """CAM of one image rendered as a PNG overlay (what the CLI and the Celery task call)."""
    result = class_activation_map(model, image_path, grade=grade, weights_dir=weights_dir)
    render_overlay(result.image, result.cam, out_path, alpha=alpha, max_side=max_side)
    return result
