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
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlcore.data.augment import AugmentConfig, augment_batch
from mlcore.data.splits import DEFAULT_SEED, grouped_holdout
from mlcore.evaluation.metrics import (
    ICDR_GRADES,
    expected_calibration_error,
    quadratic_weighted_kappa,
)
from mlcore.models.calibration import (
    Decoding,
    apply_temperature,
    choose_decoding,
    fit_temperature,
    negative_log_likelihood,
)

Progress = Callable[[int, str], None]

NETWORK_FILE = "network.keras"
KIND_FINETUNED = "finetuned"
_STATE_FILE = "state.json"
_TOP_WEIGHTS_FILE = "top.weights.h5"
_OPTIMIZER_FILE = "optimizer.npz"
_DONE_FILE = "done.json"
MIXED_PRECISION = ("auto", "on", "off")


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune (see the module docstring).

    - ``backbone``: registry name; ``top_blocks``: trainable top MBConv blocks (EfficientNet-Lite
      only) or None for the whole network; ``cut_layer``: for any backbone, the layer whose
      output is the frozen bottom's (overrides ``top_blocks``).
    - ``learning_rates``: peak learning rates tried; with more than one, the inner validation
      split picks one (each costs a training run).
    - ``variants``: augmented copies of each image whose bottom maps are cached (cached mode;
      an epoch draws one version of each image); the whole-network mode augments every epoch.
    - ``mixed_precision``: ``"auto"`` uses float16 compute only when TensorFlow sees a GPU.
    """

    backbone: str = "efficientnet_lite0"
    top_blocks: int | None = 4
    cut_layer: str | None = None
    epochs: int = 8
    learning_rates: tuple[float, ...] = (3e-4, 1e-3)
    batch_size: int = 32
    weight_decay: float = 1e-4
    dropout: float = 0.3
    warmup_fraction: float = 0.3
    class_weight: str | None = "sqrt"
    validation_fraction: float = 0.15
    variants: int = 1
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    map_flips: bool = True
    decoding: str = "auto"
    classes: tuple[int, ...] = ICDR_GRADES
    seed: int = DEFAULT_SEED
    mixed_precision: str = "auto"

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
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError("warmup_fraction must be in [0, 1)")

    @property
    def cached(self) -> bool:
        return self.cut_layer is not None or self.top_blocks is not None

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["learning_rates"] = list(self.learning_rates)
        values["classes"] = list(self.classes)
        return values


# -- the network --------------------------------------------------------------------------------
def _lite_block_output(backbone: Any, top_blocks: int) -> str:
    """Name of the layer whose output feeds the last ``top_blocks`` MBConv blocks."""
    names = [layer.name for layer in backbone.layers]
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
class _Network:
    network: Any  # preprocessed image -> logits
    bottom: Any | None  # preprocessed image -> cut maps (None: whole network trains)
    top: Any  # cut maps (or preprocessed image) -> logits
    cut_layer: str | None


def build_network(
    config: FinetuneConfig,
    *,
    weights: str | Path | None = "imagenet",
    weights_dir: str | Path | None = None,
) -> _Network:
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
    return _Network(network=network, bottom=bottom, top=top, cut_layer=cut)


# -- images -------------------------------------------------------------------------------------
def load_images(
    paths: Sequence[str | Path], *, size: int, preprocessing: str | Sequence[str] = "none"
) -> np.ndarray:
    """Decoded, preprocessed images (n, size, size, 3) uint8; ``preprocessing`` by name (one
    for all, or one per image)."""
    from mlcore.data.domain import preprocess_for
    from mlcore.data.preprocessing import load_rgb

    methods = [preprocessing] * len(paths) if isinstance(preprocessing, str) else preprocessing
    images = np.zeros((len(paths), size, size, 3), np.uint8)
    for i, (path, method) in enumerate(zip(paths, methods, strict=True)):
        images[i] = preprocess_for(load_rgb(path, min_size=math.ceil(size * 1.5)), method, size)
    return images


def _scaled(images: Any, backbone: str) -> Any:
    from mlcore.features.backbones import get_backbone

    return get_backbone(backbone).preprocess(images)


def bottom_maps(
    net: _Network,
    images: np.ndarray,
    *,
    config: FinetuneConfig,
    variant: int = 0,
    batch_size: int = 32,
    index_offset: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """The frozen bottom's maps (float16) of the images, or of their augmented copy ``variant``
    (the same picture on every run: stateless seeds from (seed, image index, variant))."""
    import tensorflow as tf

    outputs = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start : start + batch_size], tf.float32)
        if variant:
            index = np.arange(start, start + batch.shape[0], dtype=np.int64) + index_offset
            seeds = np.stack([np.full_like(index, config.seed), index * 1000 + variant], axis=1)
            batch = augment_batch(batch, seeds, config.augment)
        maps = net.bottom(_scaled(batch, config.backbone), training=False)
        outputs.append(np.asarray(maps, dtype=np.float16))
        if progress is not None:
            progress(min(len(images), start + batch_size), len(images))
    return np.concatenate(outputs) if outputs else np.zeros((0,), np.float16)


# -- checkpoints --------------------------------------------------------------------------------
def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temp.write_text(json.dumps(data, indent=2) + "\n")
    temp.replace(path)


def _epoch_dirs(folder: Path) -> list[tuple[int, Path]]:
    """Completed epoch checkpoints (a folder appears only once fully written)."""
    found = []
    if folder.is_dir():
        for child in folder.iterdir():
            if child.name.startswith("epoch-") and (child / _STATE_FILE).is_file():
                found.append((int(child.name[6:]), child))
    return sorted(found)


def _save_epoch(
    folder: Path, epoch: int, top: Any, optimizer: Any, state: Mapping[str, Any]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".epoch-{epoch:03d}.{uuid.uuid4().hex}.tmp"
    staging.mkdir()
    top.save_weights(staging / _TOP_WEIGHTS_FILE)
    np.savez(staging / _OPTIMIZER_FILE, *[np.asarray(v.numpy()) for v in optimizer.variables])
    (staging / _STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    final = folder / f"epoch-{epoch:03d}"
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)  # the checkpoint exists only once complete
    keep = {epoch, int(state["best_epoch"])}
    for number, path in _epoch_dirs(folder):
        if number not in keep:
            shutil.rmtree(path, ignore_errors=True)


def _restore_optimizer(optimizer: Any, variables: Sequence[Any], path: Path) -> None:
    optimizer.build(variables)
    with np.load(path) as stored:
        arrays = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    if len(arrays) != len(optimizer.variables):
        raise ValueError(f"{path}: optimiser state does not match this network")
    for variable, array in zip(optimizer.variables, arrays, strict=True):
        variable.assign(array)


# -- training -----------------------------------------------------------------------------------
def one_cycle_rate(step: int, total_steps: int, peak: float, warmup_fraction: float) -> float:
    """Linear warm-up from peak/25 to ``peak``, then cosine decay to peak/10000 (one-cycle)."""
    warmup = max(1, int(total_steps * warmup_fraction))
    start, end = peak / 25.0, peak / 1e4
    if step < warmup:
        return start + (peak - start) * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class _TrainData:
    """Training inputs: cached maps (n_versions, n, ...) or images (n, s, s, 3) uint8."""

    inputs: np.ndarray
    y_index: np.ndarray
    cached: bool


def _class_weights(y_index: np.ndarray, k: int, mode: str | None) -> np.ndarray:
    from mlcore.models.classifier import class_weights

    weights = class_weights(y_index, k, mode)
    return np.ones(k) if weights is None else np.asarray([weights[i] for i in range(k)])


def _epoch_batches(
    data: _TrainData, config: FinetuneConfig, epoch: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, versions) per batch for one epoch, from the deterministic (seed, epoch) stream."""
    n = data.y_index.size
    rng = np.random.default_rng([config.seed, epoch])
    order = rng.permutation(n)
    n_versions = data.inputs.shape[0] if data.cached else 1
    versions = rng.integers(0, n_versions, n)
    flips = rng.integers(0, 4, n)
    return [
        (
            order[s : s + config.batch_size],
            np.stack([versions, flips])[:, order[s : s + config.batch_size]],
        )
        for s in range(0, n, config.batch_size)
    ]


def _batch_inputs(
    data: _TrainData, rows: np.ndarray, draws: np.ndarray, config: FinetuneConfig, epoch: int
) -> Any:
    import tensorflow as tf

    if data.cached:
        maps = data.inputs[draws[0], rows].astype(np.float32)
        if config.map_flips:
            horizontal = (draws[1] & 1).astype(bool)
            vertical = (draws[1] & 2).astype(bool)
            maps[horizontal] = maps[horizontal, :, ::-1]
            maps[vertical] = maps[vertical, ::-1]
        return tf.convert_to_tensor(maps)
    images = tf.convert_to_tensor(data.inputs[rows], tf.float32)
    seeds = np.stack(
        [np.full(rows.size, config.seed, np.int64), rows.astype(np.int64) * 100003 + epoch], axis=1
    )
    return _scaled(augment_batch(images, seeds, config.augment), config.backbone)


def _predict_logits(
    model: Any, inputs: np.ndarray, *, batch_size: int, scale: Any = None
) -> np.ndarray:
    out = []
    for start in range(0, len(inputs), batch_size):
        batch = np.asarray(inputs[start : start + batch_size], dtype=np.float32)
        if scale is not None:
            batch = scale(batch)
        out.append(np.asarray(model(batch, training=False), dtype=np.float64))
    return np.concatenate(out) if out else np.zeros((0, 0))


@dataclass
class CandidateResult:
    learning_rate: float
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]]
    seconds: float
    images_per_second: float | None
    resumed_from_epoch: int


def _train_candidate(
    *,
    net: _Network,
    initial_weights: list[np.ndarray],
    data: _TrainData,
    val_inputs: np.ndarray,
    y_val: np.ndarray,
    config: FinetuneConfig,
    learning_rate: float,
    folder: Path,
    report: Callable[[int, int, str], None],
) -> CandidateResult:
    """Train the top from its initial weights with one peak learning rate, checkpointing every
    epoch in ``folder`` and resuming after the last completed one."""
    import keras
    import tensorflow as tf

    done = folder / _DONE_FILE
    if done.is_file():
        return CandidateResult(**json.loads(done.read_text()))
    k = len(config.classes)
    top = net.top
    top.set_weights(initial_weights)
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate / 25.0, weight_decay=config.weight_decay
    )
    if use_mixed_precision(config.mixed_precision):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    history: list[dict[str, float]] = []
    best_epoch, best_loss, start_epoch = 0, math.inf, 0
    completed = _epoch_dirs(folder)
    if completed:
        last_epoch, last = completed[-1]
        top.load_weights(last / _TOP_WEIGHTS_FILE)
        _restore_optimizer(optimizer, top.trainable_variables, last / _OPTIMIZER_FILE)
        state = json.loads((last / _STATE_FILE).read_text())
        history = state["history"]
        best_epoch, best_loss = int(state["best_epoch"]), float(state["best_val_loss"])
        start_epoch = last_epoch
    if not optimizer.built:
        optimizer.build(top.trainable_variables)
    weights = tf.constant(_class_weights(data.y_index, k, config.class_weight), tf.float32)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, reduction=None)

    @tf.function(reduce_retracing=True)
    def train_step(x: Any, y: Any) -> Any:
        target = tf.one_hot(y, k)
        sample_weight = tf.gather(weights, y)
        with tf.GradientTape() as tape:
            logits = tf.cast(top(x, training=True), tf.float32)
            loss = tf.reduce_sum(loss_fn(target, logits) * sample_weight) / tf.reduce_sum(
                sample_weight
            )
            scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
        grads = tape.gradient(scaled, top.trainable_variables)
        optimizer.apply(grads, top.trainable_variables)
        return loss

    steps_per_epoch = -(-data.y_index.size // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    started = time.perf_counter()
    trained_images = 0
    train_seconds = 0.0
    for epoch in range(start_epoch, config.epochs):
        epoch_started = time.perf_counter()
        losses = []
        for step, (rows, draws) in enumerate(_epoch_batches(data, config, epoch)):
            global_step = epoch * steps_per_epoch + step
            optimizer.learning_rate.assign(
                one_cycle_rate(global_step, total_steps, learning_rate, config.warmup_fraction)
            )
            x = _batch_inputs(data, rows, draws, config, epoch)
            losses.append(float(train_step(x, tf.constant(data.y_index[rows], tf.int32))))
            trained_images += rows.size
            report(epoch, step + 1, f"loss {np.mean(losses):.3f}")
        train_seconds += time.perf_counter() - epoch_started
        val_logits = _predict_logits(
            top,
            val_inputs,
            batch_size=128,
            scale=None if data.cached else (lambda b: _scaled(b, config.backbone)),
        )
        val_loss = negative_log_likelihood(val_logits, y_val, 1.0)
        val_pred = val_logits.argmax(axis=1)
        record = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "val_loss": val_loss,
            "val_accuracy": float((val_pred == y_val).mean()),
            "val_qwk": quadratic_weighted_kappa(y_val, val_pred, classes=tuple(range(k))),
            "seconds": time.perf_counter() - epoch_started,
        }
        history.append(record)
        if val_loss < best_loss:
            best_epoch, best_loss = epoch + 1, val_loss
        _save_epoch(
            folder,
            epoch + 1,
            top,
            optimizer,
            {
                "epoch": epoch + 1,
                "learning_rate": learning_rate,
                "history": history,
                "best_epoch": best_epoch,
                "best_val_loss": best_loss,
                "saved_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
        )
    result = CandidateResult(
        learning_rate=learning_rate,
        best_epoch=best_epoch,
        best_val_loss=best_loss,
        history=history,
        seconds=time.perf_counter() - started,
        images_per_second=trained_images / train_seconds if train_seconds else None,
        resumed_from_epoch=start_epoch,
    )
    _write_json_atomic(done, asdict(result))
    return result


# -- the fitted model ---------------------------------------------------------------------------
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
        self.input_size = get_backbone(backbone).input_size
        self.classes_ = np.asarray(list(classes), dtype=np.int64)
        self.temperature_ = float(temperature)
        self.decoding_ = decoding.method
        self.thresholds_ = decoding.thresholds
        self.validation_qwk_ = decoding.validation_qwk
        self.seed = seed
        self.info_ = dict(info or {})

    def logits(self, images: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
        return _predict_logits(
            self.network_,
            np.asarray(images),
            batch_size=batch_size,
            scale=lambda b: _scaled(b, self.backbone),
        )

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, columns in ``classes_`` order."""
        if len(images) == 0:
            return np.zeros((0, len(self.classes_)))
        return apply_temperature(self.logits(images), self.temperature_)

    def decode(self, proba: np.ndarray) -> np.ndarray:
        decoding = Decoding(self.decoding_, self.thresholds_, self.validation_qwk_)
        return self.classes_[decoding.positions(np.asarray(proba))]

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.decode(self.predict_proba(images))


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


def finetune_fit(
    paths: Sequence[str | Path],
    grades: Sequence[int],
    *,
    groups: Sequence[object] | None = None,
    config: FinetuneConfig | None = None,
    checkpoint_dir: str | Path,
    preprocessing: str = "none",
    weights: str | Path | None = "imagenet",
    weights_dir: str | Path | None = None,
    images: np.ndarray | None = None,
    bottom_cache: np.ndarray | None = None,
    progress: Progress | None = None,
) -> FinetuneResult:
    """Fine-tune on the images (all of them are training data: an inner grouped split of
    ``validation_fraction`` chooses the learning rate, the epoch, the temperature and the
    decoding). ``images``: already decoded inputs (n, size, size, 3) to skip decoding;
    ``bottom_cache``: the frozen bottom's maps of these images, (1 + variants, n, h, w, c) from
    :func:`cache_bottom_maps` (the bottom is frozen ImageNet layers and sees no grade, so
    cross-validation computes them once for all folds). ``checkpoint_dir``: where epochs are checkpointed; a second
    call with the same folder and data resumes."""
    from mlcore.features.backbones import get_backbone
    from mlcore.models.classifier import seed_everything

    config = config or FinetuneConfig()
    progress = progress or (lambda percent, message: None)
    checkpoint = Path(checkpoint_dir)
    spec = get_backbone(config.backbone)
    y = np.asarray(grades)
    lookup = {g: i for i, g in enumerate(config.classes)}
    unknown = sorted({int(g) for g in y.tolist()} - set(lookup))
    if unknown:
        raise ValueError(f"grades {unknown} are not on the scale {list(config.classes)}")
    y_index = np.asarray([lookup[int(g)] for g in y.tolist()], dtype=np.int64)
    row_groups = list(range(y.size)) if groups is None else list(groups)
    train_rows, val_rows = grouped_holdout(
        y_index, row_groups, test_fraction=config.validation_fraction, seed=config.seed
    )
    _check_checkpoint_matches(checkpoint, config, paths, y_index, train_rows)

    seed_everything(config.seed)
    net = build_network(config, weights=weights, weights_dir=weights_dir)
    initial = net.top.get_weights()
    if bottom_cache is None and images is None:
        progress(1, "decoding images")
        images = load_images(paths, size=spec.input_size, preprocessing=preprocessing)

    cache_started = time.perf_counter()
    if net.bottom is not None and bottom_cache is not None:
        if bottom_cache.shape[0] < config.variants + 1 or bottom_cache.shape[1] != y.size:
            raise ValueError(
                f"bottom_cache has shape {bottom_cache.shape}; expected "
                f"({config.variants + 1}, {y.size}, ...)"
            )
        versions_cached = bottom_cache[: config.variants + 1]
        data = _TrainData(versions_cached[:, train_rows], y_index[train_rows], cached=True)
        val_inputs = bottom_cache[0][val_rows]
    elif net.bottom is not None:
        versions = config.variants + 1
        train_maps = None
        for version in range(versions):
            progress(
                2 + int(18 * version / versions),
                f"frozen layers: version {version + 1}/{versions} of each image",
            )
            maps = bottom_maps(net, images[train_rows], config=config, variant=version)
            if train_maps is None:
                train_maps = np.zeros((versions, *maps.shape), np.float16)
            train_maps[version] = maps
        data = _TrainData(train_maps, y_index[train_rows], cached=True)
        val_inputs = bottom_maps(net, images[val_rows], config=config)
    else:
        data = _TrainData(images[train_rows], y_index[train_rows], cached=False)
        val_inputs = images[val_rows]
    cache_seconds = time.perf_counter() - cache_started

    n_candidates = len(config.learning_rates)
    steps = -(-train_rows.size // config.batch_size)
    total_units = n_candidates * config.epochs * steps
    clock = {"start": time.perf_counter(), "done_at_start": None}

    candidates = []
    for c, learning_rate in enumerate(config.learning_rates):

        def report(epoch: int, step: int, message: str, c: int = c) -> None:
            done = (c * config.epochs + epoch) * steps + step
            if clock["done_at_start"] is None:
                clock["done_at_start"] = done - 1
                clock["start"] = time.perf_counter()
            measured = done - clock["done_at_start"]
            rate = measured / max(1e-9, time.perf_counter() - clock["start"])
            eta = (total_units - done) / rate if rate > 0 else float("nan")
            label = f"learning rate {c + 1}/{n_candidates}, " if n_candidates > 1 else ""
            progress(
                20 + int(75 * done / total_units),
                f"{label}epoch {epoch + 1}/{config.epochs}, batch {step}/{steps}, {message}, "
                f"ETA {_duration(eta)}",
            )

        candidates.append(
            _train_candidate(
                net=net,
                initial_weights=initial,
                data=data,
                val_inputs=val_inputs,
                y_val=y_index[val_rows],
                config=config,
                learning_rate=learning_rate,
                folder=checkpoint / f"candidate-{c}",
                report=report,
            )
        )
    chosen_index = int(np.argmin([c.best_val_loss for c in candidates]))
    chosen = candidates[chosen_index]
    best_dir = checkpoint / f"candidate-{chosen_index}" / f"epoch-{chosen.best_epoch:03d}"
    net.top.load_weights(best_dir / _TOP_WEIGHTS_FILE)

    progress(96, "calibrating on the validation split")
    y_val = y_index[val_rows]
    val_logits = _predict_logits(
        net.top,
        val_inputs,
        batch_size=128,
        scale=None if net.bottom is not None else (lambda b: _scaled(b, config.backbone)),
    )
    temperature = fit_temperature(val_logits, y_val)
    val_proba = apply_temperature(val_logits, temperature)
    decoding = choose_decoding(val_proba, y_val, mode=config.decoding, seed=config.seed)
    classes = tuple(config.classes)
    calibration = {
        "method": "temperature",
        "temperature": temperature,
        "n_validation": int(val_rows.size),
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
    )
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


@dataclass
class FinetuneTrainResult:
    """What :func:`train_finetuned_model` produced (hold-out metrics when a hold-out was kept)."""

    artifact_dir: Path
    metrics: dict[str, Any] | None
    fit: FinetuneResult
    n_train: int
    n_test: int
    train_paths: list[Path]
    test_paths: list[Path]


def train_finetuned_model(
    paths: Sequence[str | Path],
    grades: Sequence[int],
    *,
    out_dir: str | Path,
    groups: Sequence[object] | None = None,
    config: FinetuneConfig | None = None,
    holdout_fraction: float = 0.1,
    preprocessing: str = "none",
    training_domain: str | None = None,
    raw_photo_preprocessing: str | None = None,
    referable_from: int | None = None,
    checkpoint_dir: str | Path | None = None,
    weights: str | Path | None = "imagenet",
    weights_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> FinetuneTrainResult:
    """Fine-tune on graded images and save the model folder ``out_dir`` (the CLI's and the
    Celery task's ``--mode finetune``): grouped hold-out of ``holdout_fraction`` of the patients
    for the reported metrics (0: train on all), :func:`finetune_fit` on the rest, calibrated
    metrics on the hold-out. ``checkpoint_dir`` (default ``<out_dir>.checkpoints``) keeps every
    completed epoch; it is removed once the model folder is written."""
    from mlcore.data.domain import RAW_TO_FILTERED
    from mlcore.data.splits import merge_groups
    from mlcore.evaluation.metrics import REFERABLE_FROM, metrics_report
    from mlcore.evaluation.reports import plot_confusion, write_json
    from mlcore.models.artifact import DOMAIN_FILTERED

    config = config or FinetuneConfig()
    progress = progress or (lambda percent, message: None)
    out = Path(out_dir)
    checkpoint = (
        Path(checkpoint_dir) if checkpoint_dir else out.with_name(f"{out.name}.checkpoints")
    )
    training_domain = training_domain or DOMAIN_FILTERED
    if raw_photo_preprocessing is None and training_domain == DOMAIN_FILTERED:
        raw_photo_preprocessing = RAW_TO_FILTERED
    referable_from = REFERABLE_FROM if referable_from is None else referable_from
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) not found, e.g. {missing[:3]}")
    y = np.asarray(grades, dtype=np.int64)
    if y.size != len(paths):
        raise ValueError(f"{len(paths)} images but {y.size} grades")
    merged = merge_groups(list(groups) if groups is not None else [None] * len(paths))
    if holdout_fraction > 0:
        train_idx, test_idx = grouped_holdout(
            y, merged, test_fraction=holdout_fraction, seed=config.seed
        )
    else:
        train_idx, test_idx = np.arange(y.size), np.arange(0)

    def fit_progress(percent: int, message: str) -> None:
        progress(int(percent * 0.9), message)

    fit = finetune_fit(
        [paths[i] for i in train_idx],
        y[train_idx],
        groups=[merged[i] for i in train_idx],
        config=config,
        checkpoint_dir=checkpoint,
        preprocessing=preprocessing,
        weights=weights,
        weights_dir=weights_dir,
        progress=fit_progress,
    )
    metrics = None
    if test_idx.size:
        progress(91, f"evaluating on {test_idx.size} held-out images")
        images = load_images(
            [paths[i] for i in test_idx], size=fit.model.input_size, preprocessing=preprocessing
        )
        proba = fit.model.predict_proba(images)
        metrics = metrics_report(
            y[test_idx],
            fit.model.decode(proba),
            proba,
            classes=config.classes,
            referable_from=referable_from,
        )
    progress(97, "saving the model")
    counts = {int(g): int((y[train_idx] == g).sum()) for g in config.classes}
    save_finetuned_artifact(
        out,
        fit,
        config=config,
        preprocessing=preprocessing,
        training_counts=counts,
        training_domain=training_domain,
        raw_photo_preprocessing=raw_photo_preprocessing
        if training_domain == DOMAIN_FILTERED
        else None,
        referable_from=referable_from,
        metrics=metrics,
        extra={
            "evaluation": "grouped stratified hold-out"
            if test_idx.size
            else "none (trained on all images)",
            "n_holdout_images": int(test_idx.size),
        },
    )
    if metrics is not None:
        write_json(metrics, out / "report.json")
        plot_confusion(
            metrics["confusion"],
            out / "confusion.png",
            classes=config.classes,
            title=f"Hold-out ({test_idx.size} images)",
        )
    shutil.rmtree(checkpoint, ignore_errors=True)
    progress(100, "done")
    return FinetuneTrainResult(
        artifact_dir=out,
        metrics=metrics,
        fit=fit,
        n_train=int(train_idx.size),
        n_test=int(test_idx.size),
        train_paths=[paths[i] for i in train_idx],
        test_paths=[paths[i] for i in test_idx],
    )


def cache_bottom_maps(
    paths: Sequence[str | Path],
    *,
    config: FinetuneConfig,
    preprocessing: str = "none",
    weights: str | Path | None = "imagenet",
    weights_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk: int = 256,
) -> np.ndarray:
    """The frozen bottom's maps of every image and of its ``config.variants`` augmented copies:
    (1 + variants, n, h, w, c) float16, decoded in chunks so memory holds maps, not images."""
    from mlcore.features.backbones import get_backbone

    net = build_network(config, weights=weights, weights_dir=weights_dir)
    if net.bottom is None:
        raise ValueError("the whole network trains (top_blocks=None): there is no frozen bottom")
    size = get_backbone(config.backbone).input_size
    versions = config.variants + 1
    shape = tuple(int(d) for d in net.bottom.output.shape[1:])
    cache = np.zeros((versions, len(paths), *shape), np.float16)
    done = 0
    for start in range(0, len(paths), chunk):
        rows = slice(start, start + chunk)
        images = load_images(paths[rows], size=size, preprocessing=preprocessing)
        for version in range(versions):
            cache[version, rows] = bottom_maps(
                net, images, config=config, variant=version, index_offset=start
            )
            done += len(images)
            if progress is not None:
                progress(done, versions * len(paths))
    return cache


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _check_checkpoint_matches(
    folder: Path,
    config: FinetuneConfig,
    paths: Sequence[str | Path],
    y_index: np.ndarray,
    train_rows: np.ndarray,
) -> None:
    """Resume only the run that wrote the checkpoints: same configuration and same data."""
    import hashlib

    digest = hashlib.sha256(
        json.dumps(
            [
                config.as_dict(),
                [Path(p).name for p in paths],
                y_index.tolist(),
                train_rows.tolist(),
            ],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "run.json"
    if marker.is_file():
        recorded = json.loads(marker.read_text()).get("digest")
        if recorded != digest:
            raise ValueError(
                f"{folder} holds checkpoints of another run (other settings or images); "
                "remove it or choose another checkpoint folder"
            )
        return
    _write_json_atomic(marker, {"digest": digest})


# -- artifacts ----------------------------------------------------------------------------------
def save_finetuned_artifact(
    out_dir: str | Path,
    result: FinetuneResult,
    *,
    config: FinetuneConfig,
    preprocessing: str,
    training_counts: Mapping[int, int],
    training_domain: str,
    raw_photo_preprocessing: str | None,
    referable_from: int,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model folder holding the whole network (``network.keras``) and the same
    metadata as a head model, with ``kind: "finetuned"``."""
    from mlcore.evaluation.metrics import ICDR_LABELS
    from mlcore.evaluation.reports import _jsonable
    from mlcore.features.backbones import get_backbone
    from mlcore.models.artifact import (
        FORMAT_VERSION,
        METADATA_FILE,
        library_versions,
        output_story,
    )

    model = result.model
    classes = [int(c) for c in model.classes_]
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": KIND_FINETUNED,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "backbones": [config.backbone],
        "preprocessing": preprocessing,
        "feature_dtype": "float32",
        "feature_dims": {config.backbone: get_backbone(config.backbone).feature_dim},
        "n_features": get_backbone(config.backbone).feature_dim,
        "training_domain": training_domain,
        "raw_photo_preprocessing": raw_photo_preprocessing,
        "classes": classes,
        "class_labels": {str(g): ICDR_LABELS.get(g, f"grade {g}") for g in classes},
        "referable_from": int(referable_from),
        "training_counts": {str(g): int(training_counts.get(g, 0)) for g in classes},
        "n_training_images": int(sum(training_counts.values())),
        "seed": int(config.seed),
        "head": {
            "params": {"classes": classes},
            "decoding": model.decoding_,
            "thresholds": None
            if model.thresholds_ is None
            else [float(t) for t in model.thresholds_],
            "validation_qwk": model.validation_qwk_,
            "temperature": model.temperature_,
            "calibration": result.calibration,
            "n_epochs": config.epochs,
            "best_epoch": result.chosen.best_epoch,
            "fit_seconds": result.train_seconds,
            "history": {
                key: [row[key] for row in result.chosen.history]
                for key in ("loss", "val_loss", "val_accuracy", "val_qwk")
            },
        },
        "outputs": output_story(
            decoding=model.decoding_, thresholds=model.thresholds_, temperature=model.temperature_
        ),
        "finetune": {
            "config": config.as_dict(),
            "cut_layer": model.info_.get("cut_layer"),
            "chosen_learning_rate": result.chosen.learning_rate,
            "candidates": [
                {
                    "learning_rate": c.learning_rate,
                    "best_epoch": c.best_epoch,
                    "best_val_loss": c.best_val_loss,
                    "images_per_second": c.images_per_second,
                }
                for c in result.candidates
            ],
            "n_train": result.n_train,
            "n_validation": result.n_validation,
            "cache_seconds": result.cache_seconds,
            "train_seconds": result.train_seconds,
        },
        "augmentation": None,
        "library_versions": library_versions(),
        "metrics": dict(metrics or {}),
    }
    if extra:
        meta["extra"] = dict(extra)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}.tmp")
    staging.mkdir()
    try:
        model.network_.save(staging / NETWORK_FILE)
        (staging / METADATA_FILE).write_text(json.dumps(_jsonable(meta), indent=2) + "\n")
        if out_dir.exists():
            retired = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}.old")
            out_dir.rename(retired)
            staging.rename(out_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def load_finetuned(artifact_dir: str | Path, meta: Mapping[str, Any]) -> FinetunedModel:
    import keras

    from mlcore.models.artifact import ArtifactError

    path = Path(artifact_dir) / NETWORK_FILE
    if not path.is_file():
        raise ArtifactError(f"{artifact_dir} is not a complete model folder: no {NETWORK_FILE}")
    network = keras.saving.load_model(path, compile=False)
    head = meta["head"]
    thresholds = head.get("thresholds")
    return FinetunedModel(
        network=network,
        backbone=meta["backbones"][0],
        classes=meta["classes"],
        temperature=float(head.get("temperature") or 1.0),
        decoding=Decoding(
            head["decoding"],
            None if thresholds is None else np.asarray(thresholds, np.float64),
            head.get("validation_qwk"),
        ),
        seed=int(meta.get("seed", DEFAULT_SEED)),
        info={"cut_layer": (meta.get("finetune") or {}).get("cut_layer")},
    )


def is_finetuned(meta: Mapping[str, Any]) -> bool:
    return meta.get("kind") == KIND_FINETUNED


def environment_flags() -> dict[str, Any]:
    """Where training ran (for reports): GPU present, mixed precision would be used."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return {"gpus": len(gpus), "cpu_threads": os.cpu_count(), "mixed_precision": bool(gpus)}


__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "FinetunedModel",
    "build_network",
    "finetune_fit",
    "load_finetuned",
    "save_finetuned_artifact",
]
