"""How to fine-tune: :class:`FinetuneConfig` (see :mod:`mlcore.models.finetune`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mlcore.data.augment import AugmentConfig
from mlcore.data.splits import DEFAULT_SEED
from mlcore.evaluation.metrics import ICDR_GRADES
from mlcore.models.finetuned import ALL_FLIPS

Progress = Callable[[int, str], None]

MIXED_PRECISION = ("auto", "on", "off")


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune (see the package docstring).

    - ``backbone``: registry name; ``top_blocks``: trainable top MBConv blocks (EfficientNet-Lite
      only) or None for the whole network; ``cut_layer``: for any backbone, the layer whose
      output is the frozen bottom's (overrides ``top_blocks``).
    - ``learning_rates``: peak learning rates tried; with more than one, the inner validation
      split picks one (each costs a training run).
    - ``variants``: augmented copies of each image whose bottom maps are cached (cached mode;
      an epoch draws one version of each image); the whole-network mode augments every epoch.
    - ``label_smoothing``: the cross-entropy's target is (1 - s) one-hot + s / k (0: none).
    - ``mixed_precision``: ``"auto"`` uses float16 compute only when TensorFlow sees a GPU.
    - ``test_flips``: the mirror flips whose probabilities the fitted model averages when it
      predicts (its hold-out, its served grades); ``(0,)`` predicts on the image as it is.

    The defaults are the recipe search's best candidate (``bench/recipes.py``, ``ft_whole_tta``):
    the whole network, 20 one-cycle epochs at a peak rate of 3e-4 fixed before the search, its
    four mirror flips averaged; QWK 0.871 under grouped 5-fold CV against 0.834 for the
    frozen-feature head (about 25 min per training on 2 CPU cores).
    """

    backbone: str = "efficientnet_lite0"
    top_blocks: int | None = None
    cut_layer: str | None = None
    epochs: int = 20
    learning_rates: tuple[float, ...] = (3e-4,)
    batch_size: int = 32
    weight_decay: float = 1e-4
    dropout: float = 0.3
    warmup_fraction: float = 0.3
    class_weight: str | None = "sqrt"
    label_smoothing: float = 0.0
    validation_fraction: float = 0.15
    variants: int = 1
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    map_flips: bool = True
    decoding: str = "auto"
    classes: tuple[int, ...] = ICDR_GRADES
    seed: int = DEFAULT_SEED
    mixed_precision: str = "auto"
    test_flips: tuple[int, ...] = ALL_FLIPS

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")
        if not self.learning_rates or any(lr <= 0 for lr in self.learning_rates):
            raise ValueError("learning_rates must be one or more positive numbers")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.top_blocks is not None and self.top_blocks < 0:
            raise ValueError("top_blocks must be >= 0 or None (whole network)")
        if not 0.0 < self.validation_fraction < 0.5:
            raise ValueError("validation_fraction must be in (0, 0.5)")
        if self.variants < 0:
            raise ValueError("variants must be >= 0")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError("warmup_fraction must be in [0, 1)")
        if not self.test_flips or any(not 0 <= f <= 3 for f in self.test_flips):
            raise ValueError("test_flips must be one or more of 0..3")

    @property
    def cached(self) -> bool:
        return self.cut_layer is not None or self.top_blocks is not None

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["learning_rates"] = list(self.learning_rates)
        values["classes"] = list(self.classes)
        values["test_flips"] = list(self.test_flips)
        return values
