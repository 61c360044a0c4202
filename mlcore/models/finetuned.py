"""The fine-tuned network as a grading model (calibrated probabilities, decoding, test-time flip
averaging): what a model folder of kind ``"finetuned"`` loads into. How it is trained:
:mod:`mlcore.models.finetune`.

Flip averaging: the cached route trains the top on mirror-flipped maps
(``FinetuneConfig.map_flips``) and the whole network on flipped images, so the flips are views
the network was taught to grade alike, and averaging its calibrated probabilities over them
cancels what a mirror changes. :func:`flipped` and :func:`averaged_proba` work on images
(n, size, size, 3) and on the frozen bottom's maps (n, h, w, c) alike: both flip along axes 1
(vertical) and 2 (horizontal)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcore.data.splits import DEFAULT_SEED
from mlcore.models.calibration import Decoding, apply_temperature

Floats = npt.NDArray[np.float64]
# Inputs (n, h, w, c) -> calibrated probabilities (n, k).
ProbaOf = Callable[[npt.NDArray[Any]], Floats]

ALL_FLIPS = (0, 1, 2, 3)  # bit 1: horizontal mirror, bit 2: vertical mirror
NO_FLIPS = (0,)


def flipped(inputs: npt.NDArray[Any], flip: int) -> npt.NDArray[Any]:
    """``inputs`` (n, h, w, c) mirrored: ``flip & 1`` horizontally, ``flip & 2`` vertically."""
    if not 0 <= flip <= 3:
        raise ValueError(f"flip must be 0..3, got {flip}")
    out = inputs[:, :, ::-1] if flip & 1 else inputs
    return out[:, ::-1] if flip & 2 else out


def averaged_proba(
    proba_of: ProbaOf,
    versions: Sequence[npt.NDArray[Any]],
    *,
    flips: Sequence[int] = ALL_FLIPS,
) -> Floats:
    """Mean of ``proba_of`` over every version of the inputs (the original first, then any
    augmented copies, each (n, h, w, c)) and every flip in ``flips``."""
    if not versions or not flips:
        raise ValueError("averaging needs at least one version and one flip")
    probas = [
        np.asarray(proba_of(np.ascontiguousarray(flipped(version, flip))), np.float64)
        for version in versions
        for flip in flips
    ]
    return np.asarray(np.mean(probas, axis=0), dtype=np.float64)


def scaled_for_backbone(images: Any, backbone: str) -> Any:
    """Images (0..255) scaled as the backbone's ImageNet weights expect."""
    from mlcore.features.backbones import get_backbone

    return get_backbone(backbone).preprocess(images)


def predict_logits(
    model: Any,
    inputs: npt.ArrayLike,
    *,
    batch_size: int,
    scale: Callable[[npt.NDArray[np.float32]], Any] | None = None,
) -> npt.NDArray[np.float64]:
    """``model``'s logits of ``inputs`` in batches; ``scale`` prepares each batch (images)."""
    rows: Any = inputs
    out = []
    for start in range(0, len(rows), batch_size):
        batch = np.asarray(rows[start : start + batch_size], dtype=np.float32)
        prepared = batch if scale is None else scale(batch)
        out.append(np.asarray(model(prepared, training=False), dtype=np.float64))
    return np.concatenate(out) if out else np.zeros((0, 0))


class FinetunedModel:
    """A fine-tuned network with its calibration and decoding; behaves like the head classifier
    for prediction (``classes_``, ``predict_proba`` calibrated, ``decode``) but takes images
    (n, size, size, 3) in 0..255 instead of features. ``flips``: the mirror flips whose
    calibrated probabilities ``predict_proba`` averages (``NO_FLIPS``: the image as it is)."""

    def __init__(
        self,
        *,
        network: Any,
        backbone: str,
        classes: Sequence[int],
        temperature: float,
        decoding: Decoding,
        seed: int = DEFAULT_SEED,
        info: Mapping[str, Any] | None = None,
        flips: Sequence[int] = NO_FLIPS,
    ) -> None:
        from mlcore.features.backbones import get_backbone

        if not flips or any(not 0 <= f <= 3 for f in flips):
            raise ValueError(f"flips must be one or more of 0..3, got {list(flips)}")
        self.network_ = network
        self.backbone = backbone
        self.input_size: int = get_backbone(backbone).input_size
        self.classes_ = np.asarray(list(classes), dtype=np.int64)
        self.temperature_ = float(temperature)
        self.decoding_ = decoding.method
        self.thresholds_ = decoding.thresholds
        self.validation_qwk_ = decoding.validation_qwk
        self.seed = seed
        self.info_ = dict(info or {})
        self.flips = tuple(int(f) for f in flips)

    def logits(self, images: npt.ArrayLike, *, batch_size: int = 32) -> npt.NDArray[np.float64]:
        return predict_logits(
            self.network_,
            np.asarray(images),
            batch_size=batch_size,
            scale=lambda b: scaled_for_backbone(b, self.backbone),
        )

    def predict_proba(
        self, images: npt.ArrayLike, *, flips: Sequence[int] | None = None
    ) -> npt.NDArray[np.float64]:
        """Calibrated probabilities, columns in ``classes_`` order, averaged over ``flips``
        (default: the model's own)."""
        images = np.asarray(images)
        if len(images) == 0:
            return np.zeros((0, len(self.classes_)))
        return averaged_proba(
            lambda view: apply_temperature(self.logits(view), self.temperature_),
            [images],
            flips=self.flips if flips is None else flips,
        )

    def decode(self, proba: npt.ArrayLike) -> npt.NDArray[np.int64]:
        decoding = Decoding(self.decoding_, self.thresholds_, self.validation_qwk_)
        return self.classes_[decoding.positions(np.asarray(proba))]

    def predict(self, images: npt.ArrayLike) -> npt.NDArray[np.int64]:
        return self.decode(self.predict_proba(images))
