"""The training loop of one candidate (one peak learning rate): a one-cycle schedule with AdamW
and class weights, deterministic epochs from ``(seed, epoch)``, a checkpoint per epoch and the
validation loss that picks the epoch."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcore.data.augment import augment_batch
from mlcore.evaluation.metrics import quadratic_weighted_kappa
from mlcore.models.calibration import negative_log_likelihood
from mlcore.models.finetune.cache import TrainData
from mlcore.models.finetune.checkpoints import (
    DONE_FILE,
    OPTIMIZER_FILE,
    STATE_FILE,
    TOP_WEIGHTS_FILE,
    epoch_dirs,
    restore_optimizer,
    save_epoch,
    write_json_atomic,
)
from mlcore.models.finetune.config import FinetuneConfig, Progress
from mlcore.models.finetune.network import FinetuneNetwork, use_mixed_precision
from mlcore.models.finetuned import predict_logits, scaled_for_backbone

# (epoch, step within it, message): a candidate's progress within its own run.
StepReport = Callable[[int, int, str], None]


def one_cycle_rate(step: int, total_steps: int, peak: float, warmup_fraction: float) -> float:
    """Linear warm-up from peak/25 to ``peak``, then cosine decay to peak/10000 (one-cycle)."""
    warmup = max(1, int(total_steps * warmup_fraction))
    start, end = peak / 25.0, peak / 1e4
    if step < warmup:
        return start + (peak - start) * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _class_weights(
    y_index: npt.NDArray[np.int64], k: int, mode: str | None
) -> npt.NDArray[np.float64]:
    from mlcore.models.classifier import class_weights

    weights = class_weights(y_index, k, mode)
    return np.ones(k) if weights is None else np.asarray([weights[i] for i in range(k)])


def _epoch_batches(
    data: TrainData, config: FinetuneConfig, epoch: int
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
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
    data: TrainData,
    rows: npt.NDArray[np.int64],
    draws: npt.NDArray[np.int64],
    config: FinetuneConfig,
    epoch: int,
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
    return scaled_for_backbone(augment_batch(images, seeds, config.augment), config.backbone)


def validation_logits(
    top: Any, inputs: npt.NDArray[Any], *, cached: bool, config: FinetuneConfig
) -> npt.NDArray[np.float64]:
    """The top's logits of the validation inputs (maps, or images scaled for the backbone)."""
    return predict_logits(
        top,
        inputs,
        batch_size=128,
        scale=None if cached else (lambda b: scaled_for_backbone(b, config.backbone)),
    )


@dataclass
class CandidateResult:
    learning_rate: float
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]]
    seconds: float
    images_per_second: float | None
    resumed_from_epoch: int


@dataclass
class _RunState:
    """Where a candidate's run stands: its history and best epoch so far."""

    history: list[dict[str, float]]
    best_epoch: int = 0
    best_val_loss: float = math.inf
    start_epoch: int = 0


def _resume(folder: Path, top: Any, optimizer: Any) -> _RunState:
    """The state after the last completed epoch checkpointed in ``folder`` (weights and optimiser
    restored), or a fresh start."""
    completed = epoch_dirs(folder)
    if not completed:
        return _RunState(history=[])
    last_epoch, last = completed[-1]
    top.load_weights(last / TOP_WEIGHTS_FILE)
    restore_optimizer(optimizer, top.trainable_variables, last / OPTIMIZER_FILE)
    state = json.loads((last / STATE_FILE).read_text())
    return _RunState(
        history=state["history"],
        best_epoch=int(state["best_epoch"]),
        best_val_loss=float(state["best_val_loss"]),
        start_epoch=last_epoch,
    )


def _optimizer(config: FinetuneConfig, learning_rate: float) -> Any:
    import keras

    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate / 25.0, weight_decay=config.weight_decay
    )
    if use_mixed_precision(config.mixed_precision):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _train_step_function(
    top: Any,
    optimizer: Any,
    class_weights: npt.NDArray[np.float64],
    k: int,
    label_smoothing: float = 0.0,
) -> Callable[[Any, Any], Any]:
    """One weighted cross-entropy step of the top, compiled once."""
    import keras
    import tensorflow as tf

    weights = tf.constant(class_weights, tf.float32)
    loss_fn = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=label_smoothing, reduction=None
    )

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

    compiled: Callable[[Any, Any], Any] = tf.function(train_step, reduce_retracing=True)
    return compiled


@dataclass
class _Candidate:
    """What one candidate's epochs need: the data, the schedule and where to report."""

    data: TrainData
    config: FinetuneConfig
    learning_rate: float
    optimizer: Any
    train_step: Callable[[Any, Any], Any]
    report: StepReport

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.data.y_index.size // self.config.batch_size)

    def train_epoch(self, epoch: int) -> list[float]:
        """Losses of the epoch's batches, the learning rate set per step."""
        import tensorflow as tf

        total_steps = self.steps_per_epoch * self.config.epochs
        losses: list[float] = []
        for step, (rows, draws) in enumerate(_epoch_batches(self.data, self.config, epoch)):
            global_step = epoch * self.steps_per_epoch + step
            self.optimizer.learning_rate.assign(
                one_cycle_rate(
                    global_step, total_steps, self.learning_rate, self.config.warmup_fraction
                )
            )
            x = _batch_inputs(self.data, rows, draws, self.config, epoch)
            y = tf.constant(self.data.y_index[rows], tf.int32)
            losses.append(float(self.train_step(x, y)))
            self.report(epoch, step + 1, f"loss {np.mean(losses):.3f}")
        return losses


def _epoch_record(
    top: Any,
    *,
    epoch: int,
    losses: list[float],
    val_inputs: npt.NDArray[Any],
    y_val: npt.NDArray[np.int64],
    candidate: _Candidate,
    epoch_started: float,
) -> dict[str, float]:
    """The epoch's history row: training loss and the validation loss, accuracy and QWK."""
    k = len(candidate.config.classes)
    val_logits = validation_logits(
        top, val_inputs, cached=candidate.data.cached, config=candidate.config
    )
    val_loss = negative_log_likelihood(val_logits, y_val, 1.0)
    val_pred = val_logits.argmax(axis=1)
    return {
        "epoch": epoch + 1,
        "loss": float(np.mean(losses)),
        "val_loss": val_loss,
        "val_accuracy": float((val_pred == y_val).mean()),
        "val_qwk": quadratic_weighted_kappa(y_val, val_pred, classes=tuple(range(k))),
        "seconds": time.perf_counter() - epoch_started,
    }


def train_candidate(
    *,
    net: FinetuneNetwork,
    initial_weights: list[npt.NDArray[Any]],
    data: TrainData,
    val_inputs: npt.NDArray[Any],
    y_val: npt.NDArray[np.int64],
    config: FinetuneConfig,
    learning_rate: float,
    folder: Path,
    report: StepReport,
) -> CandidateResult:
    """Train the top from its initial weights with one peak learning rate, checkpointing every
    epoch in ``folder`` and resuming after the last completed one."""
    done = folder / DONE_FILE
    if done.is_file():
        return CandidateResult(**json.loads(done.read_text()))
    top = net.top
    top.set_weights(initial_weights)
    optimizer = _optimizer(config, learning_rate)
    run = _resume(folder, top, optimizer)
    if not optimizer.built:
        optimizer.build(top.trainable_variables)
    weights = _class_weights(data.y_index, len(config.classes), config.class_weight)
    candidate = _Candidate(
        data=data,
        config=config,
        learning_rate=learning_rate,
        optimizer=optimizer,
        train_step=_train_step_function(
            top, optimizer, weights, len(config.classes), config.label_smoothing
        ),
        report=report,
    )
    started = time.perf_counter()
    trained_images = 0
    train_seconds = 0.0
    for epoch in range(run.start_epoch, config.epochs):
        epoch_started = time.perf_counter()
        losses = candidate.train_epoch(epoch)
        trained_images += data.y_index.size
        train_seconds += time.perf_counter() - epoch_started
        record = _epoch_record(
            top,
            epoch=epoch,
            losses=losses,
            val_inputs=val_inputs,
            y_val=y_val,
            candidate=candidate,
            epoch_started=epoch_started,
        )
        run.history.append(record)
        if record["val_loss"] < run.best_val_loss:
            run.best_epoch, run.best_val_loss = epoch + 1, record["val_loss"]
        _checkpoint(folder, epoch + 1, top, optimizer, learning_rate, run)
    result = CandidateResult(
        learning_rate=learning_rate,
        best_epoch=run.best_epoch,
        best_val_loss=run.best_val_loss,
        history=run.history,
        seconds=time.perf_counter() - started,
        images_per_second=trained_images / train_seconds if train_seconds else None,
        resumed_from_epoch=run.start_epoch,
    )
    write_json_atomic(done, asdict(result))
    return result


def _checkpoint(
    folder: Path, epoch: int, top: Any, optimizer: Any, learning_rate: float, run: _RunState
) -> None:
    save_epoch(
        folder,
        epoch,
        top,
        optimizer,
        {
            "epoch": epoch,
            "learning_rate": learning_rate,
            "history": run.history,
            "best_epoch": run.best_epoch,
            "best_val_loss": run.best_val_loss,
            "saved_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    )


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class EtaProgress:
    """Progress of all candidates' epochs (20..95 %) with the time left, measured from the
    first step this process trains (resumed steps cost nothing)."""

    def __init__(self, progress: Progress, config: FinetuneConfig, n_train: int) -> None:
        self.progress = progress
        self.config = config
        self.steps = -(-n_train // config.batch_size)
        self.n_candidates = len(config.learning_rates)
        self.total_units = self.n_candidates * config.epochs * self.steps
        self.start = time.perf_counter()
        self.done_at_start: int | None = None

    def for_candidate(self, c: int) -> StepReport:
        def report(epoch: int, step: int, message: str) -> None:
            self.report(c, epoch, step, message)

        return report

    def report(self, c: int, epoch: int, step: int, message: str) -> None:
        config, steps = self.config, self.steps
        done = (c * config.epochs + epoch) * steps + step
        if self.done_at_start is None:
            self.done_at_start = done - 1
            self.start = time.perf_counter()
        measured = done - self.done_at_start
        rate = measured / max(1e-9, time.perf_counter() - self.start)
        eta = (self.total_units - done) / rate if rate > 0 else float("nan")
        label = f"learning rate {c + 1}/{self.n_candidates}, " if self.n_candidates > 1 else ""
        self.progress(
            20 + int(75 * done / self.total_units),
            f"{label}epoch {epoch + 1}/{config.epochs}, batch {step}/{steps}, {message}, "
            f"ETA {_duration(eta)}",
        )
