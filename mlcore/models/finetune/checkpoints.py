"""Per-epoch checkpoints of a fine-tuning run (trainable weights, optimiser state, history), so
a killed worker loses at most one epoch, and the marker that only the same run resumes them."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcore.models.finetune.config import FinetuneConfig

STATE_FILE = "state.json"
TOP_WEIGHTS_FILE = "top.weights.h5"
OPTIMIZER_FILE = "optimizer.npz"
DONE_FILE = "done.json"
_RUN_FILE = "run.json"


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temp.write_text(json.dumps(data, indent=2) + "\n")
    temp.replace(path)


def epoch_dirs(folder: Path) -> list[tuple[int, Path]]:
    """Completed epoch checkpoints (a folder appears only once fully written)."""
    found = []
    if folder.is_dir():
        for child in folder.iterdir():
            if child.name.startswith("epoch-") and (child / STATE_FILE).is_file():
                found.append((int(child.name[6:]), child))
    return sorted(found)


def epoch_dir(folder: Path, epoch: int) -> Path:
    return folder / f"epoch-{epoch:03d}"


def save_epoch(
    folder: Path, epoch: int, top: Any, optimizer: Any, state: Mapping[str, Any]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".epoch-{epoch:03d}.{uuid.uuid4().hex}.tmp"
    staging.mkdir()
    top.save_weights(staging / TOP_WEIGHTS_FILE)
    np.savez(staging / OPTIMIZER_FILE, *[np.asarray(v.numpy()) for v in optimizer.variables])
    (staging / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    final = epoch_dir(folder, epoch)
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)  # the checkpoint exists only once complete
    keep = {epoch, int(state["best_epoch"])}
    for number, path in epoch_dirs(folder):
        if number not in keep:
            shutil.rmtree(path, ignore_errors=True)


def restore_optimizer(optimizer: Any, variables: Sequence[Any], path: Path) -> None:
    optimizer.build(variables)
    with np.load(path) as stored:
        arrays = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    if len(arrays) != len(optimizer.variables):
        raise ValueError(f"{path}: optimiser state does not match this network")
    for variable, array in zip(optimizer.variables, arrays, strict=True):
        variable.assign(array)


def check_checkpoint_matches(
    folder: Path,
    config: FinetuneConfig,
    paths: Sequence[str | Path],
    y_index: npt.NDArray[np.int64],
    train_rows: npt.NDArray[np.int64],
) -> None:
    """Resume only the run that wrote the checkpoints: same configuration and same data."""
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
    marker = folder / _RUN_FILE
    if marker.is_file():
        recorded = json.loads(marker.read_text()).get("digest")
        if recorded != digest:
            raise ValueError(
                f"{folder} holds checkpoints of another run (other settings or images); "
                "remove it or choose another checkpoint folder"
            )
        return
    write_json_atomic(marker, {"digest": digest})
