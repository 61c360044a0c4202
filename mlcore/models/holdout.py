"""The one training skeleton every kind of model follows: a grouped, stratified hold-out split,
fit on the rest, metrics on the hold-out, the model folder, its reports.

What differs between a head on frozen features and a fine-tuned network (how to fit, predict
the hold-out and save) are the :class:`HoldoutSteps` each training entry point supplies:
:func:`mlcore.pipelines.training.train_model` and
:func:`mlcore.models.finetune.train_finetuned_model`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from mlcore.data.splits import grouped_holdout
from mlcore.evaluation.metrics import metrics_report
from mlcore.evaluation.reports import plot_confusion, write_json

Progress = Callable[[int, str], None]
Rows = npt.NDArray[np.int64]
FitT = TypeVar("FitT")


class HoldoutSteps(Protocol[FitT]):
    """The steps of :func:`train_with_holdout` that depend on the kind of model."""

    def fit(self, train_idx: Rows, test_idx: Rows) -> FitT:
        """Fit on the training rows (``test_idx``: the rows to prepare for evaluation)."""
        ...

    def holdout_predictions(
        self, fitted: FitT, test_idx: Rows
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """(probabilities, grades) of the held-out rows."""
        ...

    def save(
        self,
        fitted: FitT,
        *,
        training_counts: Mapping[int, int],
        metrics: Mapping[str, Any] | None,
        extra: Mapping[str, Any],
    ) -> Path:
        """Write the model folder; returns it."""
        ...

    def finish(self, fitted: FitT, out: Path) -> None:
        """Whatever the kind adds once the folder and its hold-out reports are written."""
        ...


@dataclass(frozen=True)
class HoldoutPlan:
    """The grade scale, the split, and where on the progress bar evaluation and saving start.
    ``labels``: names of the grades on the confusion plot (None: numbers only)."""

    classes: tuple[int, ...]
    referable_from: int
    holdout_fraction: float
    seed: int
    labels: Mapping[int, str] | None
    evaluate_percent: int
    save_percent: int


@dataclass
class HoldoutRun(Generic[FitT]):
    """What :func:`train_with_holdout` produced (metrics None when nothing was held out)."""

    out: Path
    fitted: FitT
    metrics: dict[str, Any] | None
    train_idx: Rows
    test_idx: Rows


def holdout_split(
    y: npt.NDArray[np.int64], groups: npt.NDArray[Any], *, fraction: float, seed: int
) -> tuple[Rows, Rows]:
    """(training rows, held-out rows): ``fraction`` of the groups held out, none when 0."""
    if fraction > 0:
        return grouped_holdout(y, groups, test_fraction=fraction, seed=seed)
    return np.arange(y.size), np.arange(0)


def train_with_holdout(
    steps: HoldoutSteps[FitT],
    y: npt.NDArray[np.int64],
    groups: npt.NDArray[Any],
    *,
    plan: HoldoutPlan,
    progress: Progress,
) -> HoldoutRun[FitT]:
    """Split -> fit -> metrics on the hold-out -> model folder (with ``report.json`` and
    ``confusion.png`` when something was held out) -> ``steps.finish``."""
    train_idx, test_idx = holdout_split(y, groups, fraction=plan.holdout_fraction, seed=plan.seed)
    fitted = steps.fit(train_idx, test_idx)
    metrics = None
    if test_idx.size:
        progress(plan.evaluate_percent, f"evaluating on {test_idx.size} held-out images")
        proba, grades = steps.holdout_predictions(fitted, test_idx)
        metrics = metrics_report(
            y[test_idx],
            grades,
            proba,
            classes=plan.classes,
            referable_from=plan.referable_from,
        )
    progress(plan.save_percent, "saving the model")
    out = steps.save(
        fitted,
        training_counts={int(g): int((y[train_idx] == g).sum()) for g in plan.classes},
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
            classes=plan.classes,
            labels=plan.labels,
            title=f"Hold-out ({test_idx.size} images)",
        )
    steps.finish(fitted, out)
    progress(100, "done")
    return HoldoutRun(
        out=out, fitted=fitted, metrics=metrics, train_idx=train_idx, test_idx=test_idx
    )
