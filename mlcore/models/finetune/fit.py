"""Fine-tuning on training images: an inner validation split chooses the learning rate, the
epoch, the temperature and the decoding (:func:`finetune_fit`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcore.data.domain import ImageDomain
from mlcore.data.splits import grouped_holdout
from mlcore.evaluation.metrics import expected_calibration_error
from mlcore.models.calibration import apply_temperature, choose_decoding, fit_temperature
from mlcore.models.finetune.cache import Maps, TrainData, training_inputs
from mlcore.models.finetune.checkpoints import (
    TOP_WEIGHTS_FILE,
    check_checkpoint_matches,
    epoch_dir,
)
from mlcore.models.finetune.config import FinetuneConfig, Progress
from mlcore.models.finetune.loop import (
    CandidateResult,
    EtaProgress,
    train_candidate,
    validation_logits,
)
from mlcore.models.finetune.network import FinetuneNetwork, Images, build_network
from mlcore.models.finetuned import FinetunedModel


@dataclass
class FinetuneResult:
    model: FinetunedModel
    candidates: list[CandidateResult]
    chosen: CandidateResult
    n_train: int
    n_validation: int
    cache_seconds: float
    train_seconds: float
    calibration: dict[str, Any]
    top: Any = None  # the trained top (cached maps -> logits); the network when it all trains


def _no_progress(percent: int, message: str) -> None:
    return None


def _grade_positions(grades: npt.ArrayLike, classes: Sequence[int]) -> npt.NDArray[np.int64]:
    lookup = {g: i for i, g in enumerate(classes)}
    y = np.asarray(grades)
    unknown = sorted({int(g) for g in y.tolist()} - set(lookup))
    if unknown:
        raise ValueError(f"grades {unknown} are not on the scale {list(classes)}")
    return np.asarray([lookup[int(g)] for g in y.tolist()], dtype=np.int64)


def finetune_fit(
    paths: Sequence[str | Path],
    grades: npt.ArrayLike,
    *,
    groups: Sequence[object] | None = None,
    config: FinetuneConfig | None = None,
    checkpoint_dir: str | Path,
    domain: ImageDomain | None = None,
    weights: str | Path | None = "imagenet",
    weights_dir: str | Path | None = None,
    images: Images | None = None,
    bottom_cache: Maps | None = None,
    progress: Progress | None = None,
) -> FinetuneResult:
    """Fine-tune on the images (all of them are training data: an inner grouped split of
    ``validation_fraction`` chooses the learning rate, the epoch, the temperature and the
    decoding). ``images``: already decoded inputs (n, size, size, 3) to skip decoding;
    ``bottom_cache``: the frozen bottom's maps of these images, (1 + variants, n, h, w, c) from
    :func:`~mlcore.models.finetune.cache.cache_bottom_maps` (the bottom is frozen ImageNet
    layers and sees no grade, so cross-validation computes them once for all folds).
    ``checkpoint_dir``: where epochs are checkpointed; a second call with the same folder and
    data resumes. ``domain``: how image files reach the network when neither ``images`` nor
    ``bottom_cache`` is given (default: the shared set's filtered domain, raw photographs
    mapped into it), the same :meth:`~mlcore.data.domain.ImageDomain.load` prediction uses."""
    from mlcore.features.backbones import get_backbone
    from mlcore.models.classifier import seed_everything

    config = config or FinetuneConfig()
    progress = progress or _no_progress
    checkpoint = Path(checkpoint_dir)
    spec = get_backbone(config.backbone)
    y_index = _grade_positions(grades, config.classes)
    row_groups = list(range(y_index.size)) if groups is None else list(groups)
    train_rows, val_rows = grouped_holdout(
        y_index, row_groups, test_fraction=config.validation_fraction, seed=config.seed
    )
    check_checkpoint_matches(checkpoint, config, paths, y_index, train_rows)

    seed_everything(config.seed)
    net = build_network(config, weights=weights, weights_dir=weights_dir)
    initial = net.top.get_weights()
    if bottom_cache is None and images is None:
        progress(1, "decoding images")
        images, _ = (domain or ImageDomain()).load(paths, size=spec.input_size)
    cache_started = time.perf_counter()
    data, val_inputs = training_inputs(
        net,
        config=config,
        y_index=y_index,
        train_rows=train_rows,
        val_rows=val_rows,
        images=images,
        bottom_cache=bottom_cache,
        progress=progress,
    )
    cache_seconds = time.perf_counter() - cache_started
    y_val = y_index[val_rows]
    candidates = _train_candidates(
        net, initial, data, val_inputs, y_val, config, checkpoint, progress
    )
    chosen_index = int(np.argmin([c.best_val_loss for c in candidates]))
    chosen = candidates[chosen_index]
    best_dir = epoch_dir(checkpoint / f"candidate-{chosen_index}", chosen.best_epoch)
    net.top.load_weights(best_dir / TOP_WEIGHTS_FILE)

    progress(96, "calibrating on the validation split")
    model, calibration = _calibrated_model(net, val_inputs, y_val, config)
    progress(100, "done")
    return FinetuneResult(
        model=model,
        candidates=candidates,
        chosen=chosen,
        n_train=int(train_rows.size),
        n_validation=int(val_rows.size),
        cache_seconds=cache_seconds,
        train_seconds=float(sum(c.seconds for c in candidates)),
        calibration=calibration,
        top=net.top,
    )


def _train_candidates(
    net: FinetuneNetwork,
    initial: list[npt.NDArray[Any]],
    data: TrainData,
    val_inputs: npt.NDArray[Any],
    y_val: npt.NDArray[np.int64],
    config: FinetuneConfig,
    checkpoint: Path,
    progress: Progress,
) -> list[CandidateResult]:
    """One training run per peak learning rate, each from the same initial weights."""
    eta = EtaProgress(progress, config, data.y_index.size)
    return [
        train_candidate(
            net=net,
            initial_weights=initial,
            data=data,
            val_inputs=val_inputs,
            y_val=y_val,
            config=config,
            learning_rate=learning_rate,
            folder=checkpoint / f"candidate-{c}",
            report=eta.for_candidate(c),
        )
        for c, learning_rate in enumerate(config.learning_rates)
    ]


def _calibrated_model(
    net: FinetuneNetwork,
    val_inputs: npt.NDArray[Any],
    y_val: npt.NDArray[np.int64],
    config: FinetuneConfig,
) -> tuple[FinetunedModel, dict[str, Any]]:
    """The model with its temperature and decoding fitted on the validation split, and the
    calibration record (ECE before and after)."""
    val_logits = validation_logits(
        net.top, val_inputs, cached=net.bottom is not None, config=config
    )
    temperature = fit_temperature(val_logits, y_val)
    val_proba = apply_temperature(val_logits, temperature)
    decoding = choose_decoding(val_proba, y_val, mode=config.decoding, seed=config.seed)
    classes = tuple(config.classes)
    calibration = {
        "method": "temperature",
        "temperature": temperature,
        "n_validation": int(y_val.size),
        "ece_before": expected_calibration_error(
            np.asarray(classes)[y_val], apply_temperature(val_logits, 1.0), classes=classes
        ),
        "ece_after": expected_calibration_error(
            np.asarray(classes)[y_val], val_proba, classes=classes
        ),
    }
    model = FinetunedModel(
        network=net.network,
        backbone=config.backbone,
        classes=config.classes,
        temperature=temperature,
        decoding=decoding,
        seed=config.seed,
        info={"cut_layer": net.cut_layer},
        flips=config.test_flips,
    )
    return model, calibration
