"""Evaluation reports: JSON plus PNG plots (confusion matrix, per-epoch loss/accuracy curves).

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``) rather
than through pyplot, so nothing touches the process-wide backend or keeps figures alive: safe in
a Celery worker and in the web process alike. No TensorFlow here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_confusion(
    matrix: npt.ArrayLike,
    out_path: str | Path,
    *,
    classes: Sequence[int],
    labels: Mapping[int, str] | None = None,
    title: str = "Confusion matrix",
) -> Path:
    """Rows = true grade, columns = predicted grade; cells coloured by row fraction, with counts."""
    counts = np.asarray(matrix, dtype=np.int64)
    k = len(classes)
    if counts.shape != (k, k):
        raise ValueError(f"confusion matrix must be {k}x{k} for classes {list(classes)}")
    row_totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, np.maximum(row_totals, 1), dtype=np.float64)
    names = [
        f"{grade}\n{labels[grade]}" if labels and grade in labels else str(grade)
        for grade in classes
    ]
    figure = _figure(1.3 * k + 2.5, 1.1 * k + 2.0)
    axes = figure.add_subplot()
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of true grade")
    for i in range(k):
        for j in range(k):
            colour = "white" if fractions[i, j] > 0.5 else "black"
            axes.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour)
    axes.set_xticks(range(k), names, fontsize=8)
    axes.set_yticks(range(k), names, fontsize=8)
    axes.set_xlabel("predicted grade")
    axes.set_ylabel("true grade")
    axes.set_title(title)
    figure.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, format="png")
    return out_path


def plot_history(
    history: Mapping[str, Sequence[float]],
    out_path: str | Path,
    *,
    best_epoch: int | None = None,
    title: str = "Training curves",
) -> Path:
    """Loss and accuracy per epoch, training and validation, side by side."""
    if not history or not history.get("loss"):
        raise ValueError("history has no 'loss' values to plot")
    figure = _figure(10, 4)
    for position, metric in enumerate(("loss", "accuracy"), start=1):
        axes = figure.add_subplot(1, 2, position)
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + metric)
            if values:
                epochs = range(1, len(values) + 1)
                label = "validation" if prefix else "training"
                axes.plot(epochs, values, style, label=label)
        if best_epoch is not None:
            axes.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, format="png")
    return out_path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(data: Mapping[str, Any], out_path: str | Path) -> Path:
    """Write a report (numpy values converted, NaN/inf as null) as indented JSON."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(_jsonable(data), indent=2) + "\n")
    return out_path
