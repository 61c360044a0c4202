"""Fine-tuning a pretrained backbone with a grading head (``python -m mlcore train --mode finetune``).

The network is backbone (ImageNet weights) -> global average pooling -> dropout -> dense logits.
What trains is chosen by :class:`FinetuneConfig`:

- ``top_blocks=N`` (EfficientNet-Lite backbones): the last N MBConv blocks and the head
  convolution train; everything below stays frozen. The frozen bottom then gives the same
  output for an image every epoch, so it runs **once** per image (and once per augmented copy,
  ``variants``) and the top trains on those cached feature maps, with random mirror flips of
  the maps on the fly. On 2 CPU cores this is ~100 training img/s for Lite0's last 4 blocks
  against ~5 img/s for the whole network (``bench/finetune.py`` measures both).
- ``top_blocks=None``: the whole network trains on images, augmented on the fly every epoch
  with the seed recipe's random affine transform (:mod:`mlcore.data.augment`, TensorFlow ops, so on
  the GPU where there is one).

Batch normalisation layers stay frozen (their ImageNet statistics; batches of 32 fundus images
would make poor estimates). Training is a one-cycle schedule (linear warm-up to the peak
learning rate, cosine decay to ~0) with AdamW and square-root class weights, a deterministic
seed (the epoch's order, augmentation and flips come from ``(seed, epoch)``), and mixed precision
on a GPU only.

Every completed epoch is checkpointed (the trainable weights, the optimiser state and the
history) into ``checkpoint_dir``; calling :func:`finetune_fit` again with the same folder
resumes after the last completed epoch, so a killed worker loses at most one epoch.

Every choice is made on an inner validation split carved out of the training data (grouped by
patient, stratified by grade): the peak learning rate among ``learning_rates`` and the epoch
(lowest validation loss), then temperature scaling and the decoding (:mod:`mlcore.models.calibration`).

Modules: ``config`` (:class:`FinetuneConfig`), ``network`` (the network and its images),
``cache`` (the frozen bottom's maps), ``checkpoints``, ``loop`` (one candidate's training),
``fit`` (:func:`finetune_fit`), ``train`` (:func:`train_finetuned_model`: hold-out, fit, metrics,
model folder). The fitted network is a :class:`~mlcore.models.finetuned.FinetunedModel`; the model
folder's format belongs to :mod:`mlcore.models.artifact`.
"""

from __future__ import annotations

from mlcore.models.artifact import load_finetuned
from mlcore.models.finetune.cache import bottom_maps, cache_bottom_maps
from mlcore.models.finetune.config import MIXED_PRECISION, FinetuneConfig
from mlcore.models.finetune.fit import FinetuneResult, finetune_fit
from mlcore.models.finetune.loop import CandidateResult, one_cycle_rate
from mlcore.models.finetune.network import (
    FinetuneNetwork,
    build_network,
    environment_flags,
    load_images,
    use_mixed_precision,
)
from mlcore.models.finetune.train import (
    FinetuneTrainResult,
    save_finetuned_artifact,
    train_finetuned_model,
)
from mlcore.models.finetuned import FinetunedModel, predict_logits

__all__ = [
    "MIXED_PRECISION",
    "CandidateResult",
    "FinetuneConfig",
    "FinetuneNetwork",
    "FinetuneResult",
    "FinetuneTrainResult",
    "FinetunedModel",
    "bottom_maps",
    "build_network",
    "cache_bottom_maps",
    "environment_flags",
    "finetune_fit",
    "load_finetuned",
    "load_images",
    "one_cycle_rate",
    "predict_logits",
    "save_finetuned_artifact",
    "train_finetuned_model",
    "use_mixed_precision",
]
