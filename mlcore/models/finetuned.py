"""The fine-tuned network as a grading model (calibrated probabilities, decoding): what a model
folder of kind ``"finetuned"`` loads into. How it is trained: :mod:`mlcore.models.finetune`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcore.data.splits import DEFAULT_SEED
from mlcore.models.calibration import Decoding, apply_temperature


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
    (n, size, size, 3) in 0..255 instead of features."""

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
    ) -> None:
        from mlcore.features.backbones import get_backbone

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

    def logits(self, images: npt.ArrayLike, *, batch_size: int = 32) -> npt.NDArray[np.float64]:
        return predict_logits(
            self.network_,
            np.asarray(images),
            batch_size=batch_size,
            scale=lambda b: scaled_for_backbone(b, self.backbone),
        )

    def predict_proba(self, images: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Calibrated probabilities, columns in ``classes_`` order."""
        images = np.asarray(images)
        if len(images) == 0:
            return np.zeros((0, len(self.classes_)))
        return apply_temperature(self.logits(images), self.temperature_)

    def decode(self, proba: npt.ArrayLike) -> npt.NDArray[np.int64]:
        decoding = Decoding(self.decoding_, self.thresholds_, self.validation_qwk_)
        return self.classes_[decoding.positions(np.asarray(proba))]

    def predict(self, images: npt.ArrayLike) -> npt.NDArray[np.int64]:
        return self.decode(self.predict_proba(images))
