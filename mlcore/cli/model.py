"""Model commands of ``python -m mlcore``: train, evaluate, predict, cam.

Registered by ``mlcore.cli`` through :func:`register`; each command is a thin wrapper over the
library functions the Celery tasks call (``mlcore.pipelines.training``,
``mlcore.pipelines.predict``, ``mlcore.pipelines.cam``, ``mlcore.models.finetune``).
"""

from __future__ import annotations

import argparse
import csv
import functools
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict, Unpack

from mlcore.cli.options import split_names
from mlcore.features.config import FeatureConfig, default_store_dir, default_weights_dir

if TYPE_CHECKING:
    from mlcore.models.artifact import ModelArtifact
    from mlcore.models.finetune import FinetuneConfig
    from mlcore.pipelines.training import LabeledImages, TrainingConfig

# What ``add_subparsers`` returns; a string because argparse's class is generic only in typeshed.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class _UserError(Exception):
    """Wraps an error that is the user's to fix (printed as one line, exit status 2)."""


def _user_errors(
    function: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """Report this module's expected failures like ``mlcore.cli`` does for its own."""

    @functools.wraps(function)
    def run(args: argparse.Namespace) -> int:
        from mlcore.models.artifact import ArtifactError
        from mlcore.pipelines.predict import DomainMismatchError
        from mlcore.pipelines.training import LabelsError

        try:
            return function(args)
        except (_UserError, ArtifactError, DomainMismatchError, LabelsError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return run


def _progress_bar(quiet: bool) -> tuple[Callable[[int, str], None], Callable[[], None]]:
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", disable=quiet, file=sys.stderr)

    def progress(percent: int, message: str) -> None:
        bar.n = max(bar.n, min(100, percent))
        bar.set_description_str(message[:40])
        bar.refresh()

    return progress, bar.close


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backbones",
        nargs="+",
        help="backbone names (default: FUNDUS_BACKBONES or the defaults; for a model folder, "
        "refuse it unless it was built on these)",
    )
    parser.add_argument("--store", type=Path, help="feature store folder (FUNDUS_FEATURE_STORE)")
    parser.add_argument("--weights-dir", type=Path, help="offline weights (FUNDUS_WEIGHTS_DIR)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--labels", type=Path, required=True, help="CSV with filename,grade[,patient_id]"
    )
    parser.add_argument(
        "--images",
        type=Path,
        help="folder the CSV's file names are relative to (default: its folder)",
    )
    parser.add_argument(
        "--groups-file",
        type=Path,
        help="near-duplicate groups (one line of image ids per group) kept on one side",
    )
    parser.add_argument(
        "--variants", type=int, default=0, help="augmented copies per training image (default 0)"
    )
    parser.add_argument(
        "--tta", action="store_true", help="average predictions over the augmented copies too"
    )
    parser.add_argument("--seed", type=int, default=2017)
    parser.add_argument("--epochs", type=int, help="maximum epochs (early stopping decides)")
    parser.add_argument(
        "--preprocessing",
        help="none, crop or ben_graham (default: FUNDUS_PREPROCESSING or none; the shared "
        "dataset is already Ben-Graham filtered, so none)",
    )
    _add_store_options(parser)


def _feature_config(args: argparse.Namespace) -> FeatureConfig:
    return FeatureConfig.from_env(
        backbones=split_names(args.backbones), preprocessing=args.preprocessing
    )


class _TrainingOverrides(TypedDict, total=False):
    """What ``train`` and ``evaluate`` each set beyond the shared options."""

    holdout_fraction: float
    n_splits: int


def _training_config(
    args: argparse.Namespace, **overrides: Unpack[_TrainingOverrides]
) -> TrainingConfig:
    from mlcore.data.augment import AugmentConfig
    from mlcore.pipelines.training import TrainingConfig

    if args.variants < 0:
        raise _UserError("--variants must be >= 0")
    head = {"epochs": args.epochs} if args.epochs else {}
    return TrainingConfig(
        seed=args.seed,
        augment=replace(AugmentConfig(), variants=args.variants),
        tta=args.tta,
        head=head,
        **overrides,
    )


def _finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    from mlcore.models.finetune import FinetuneConfig
    from mlcore.models.finetuned import ALL_FLIPS, NO_FLIPS

    try:
        top_blocks = None if args.top_blocks == "all" else int(args.top_blocks)
    except ValueError:
        raise _UserError(
            f"--top-blocks must be a number or 'all', not {args.top_blocks!r}"
        ) from None
    try:
        rates = tuple(float(v) for v in args.learning_rates.split(",") if v.strip())
    except ValueError:
        raise _UserError(
            f"--learning-rates: {args.learning_rates!r} is not a list of numbers"
        ) from None
    try:
        return FinetuneConfig(
            backbone=args.backbone,
            top_blocks=top_blocks,
            epochs=args.epochs or FinetuneConfig.epochs,
            learning_rates=rates,
            batch_size=args.batch_size,
            variants=args.variants if args.variants else 1,
            seed=args.seed,
            mixed_precision=args.mixed_precision,
            test_flips=NO_FLIPS if args.no_flip_averaging else ALL_FLIPS,
        )
    except ValueError as error:
        raise _UserError(str(error)) from None


def _train_finetune(args: argparse.Namespace, labels: LabeledImages) -> int:
    from mlcore.features.backbones import get_backbone
    from mlcore.models.finetune import train_finetuned_model

    get_backbone(args.backbone)  # an unknown name fails before any work
    config = _finetune_config(args)
    progress, close = _progress_bar(args.quiet)
    try:
        result = train_finetuned_model(
            labels.paths,
            labels.grades,
            groups=labels.groups,
            out_dir=args.out,
            config=config,
            holdout_fraction=args.holdout,
            preprocessing=args.preprocessing or "none",
            checkpoint_dir=args.checkpoint_dir,
            weights_dir=args.weights_dir or default_weights_dir(),
            progress=progress,
        )
    finally:
        close()
    fit = result.fit
    print(
        f"model saved to {result.artifact_dir} ({result.n_train} training images; "
        f"{config.backbone}, {'whole network' if config.top_blocks is None else f'top {config.top_blocks} blocks'}"
        f", learning rate {fit.chosen.learning_rate:g}, best epoch {fit.chosen.best_epoch}/"
        f"{config.epochs}, temperature {fit.model.temperature_:.2f}, "
        f"{fit.model.decoding_} decoding)"
    )
    if result.metrics:
        _print_headline(result.metrics, f"hold-out of {result.n_test} images")
    return 0


@_user_errors
def _train(args: argparse.Namespace) -> int:
    from mlcore.pipelines.labels import with_near_duplicates
    from mlcore.pipelines.training import read_labels_csv, train_model

    labels = with_near_duplicates(
        read_labels_csv(args.labels, images_dir=args.images, groups_file=args.groups_file)
    )
    if args.mode == "finetune":
        return _train_finetune(args, labels)
    progress, close = _progress_bar(args.quiet)
    try:
        result = train_model(
            labels.paths,
            labels.grades,
            groups=labels.groups,
            out_dir=args.out,
            feature_config=_feature_config(args),
            training_config=_training_config(args, holdout_fraction=args.holdout),
            store_dir=args.store or default_store_dir(),
            weights_dir=args.weights_dir or default_weights_dir(),
            progress=progress,
        )
    finally:
        close()
    print(
        f"model saved to {result.artifact_dir} ({result.n_train} training images, "
        f"{result.n_variants} augmented copies each; head trained in {result.fit_seconds:.1f} s, "
        f"{result.classifier.decoding_} decoding)"
    )
    if result.metrics:
        _print_headline(result.metrics, f"hold-out of {result.n_test} images")
    return 0


def _print_headline(report: Mapping[str, Any], title: str) -> None:
    referable = report["referable"]

    def show(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    print(
        f"{title}: QWK {show(report['qwk'])}, accuracy {show(report['accuracy'])}, referable DR "
        f"sensitivity {show(referable['sensitivity'])}, specificity "
        f"{show(referable['specificity'])}, AUC {show(referable['auc'])}"
    )


@_user_errors
def _evaluate(args: argparse.Namespace) -> int:
    from mlcore.pipelines.labels import with_near_duplicates
    from mlcore.pipelines.training import evaluate_cv, read_labels_csv

    labels = with_near_duplicates(
        read_labels_csv(args.labels, images_dir=args.images, groups_file=args.groups_file)
    )
    progress, close = _progress_bar(args.quiet)
    try:
        result = evaluate_cv(
            labels.paths,
            labels.grades,
            groups=labels.groups,
            feature_config=_feature_config(args),
            training_config=_training_config(args, n_splits=args.folds),
            store_dir=args.store or default_store_dir(),
            weights_dir=args.weights_dir or default_weights_dir(),
            out_dir=args.out,
            progress=progress,
        )
    finally:
        close()
    print(f"{args.folds}-fold cross-validation, grouped by patient (mean ± sd over folds):")
    for name, stats in result.summary.items():
        if stats["mean"] is not None:
            print(f"  {name:<22} {stats['mean']:.3f} ± {stats['std']:.3f}")
    _print_headline(result.pooled, "pooled out-of-fold")
    if args.out:
        print(f"report written to {args.out / 'report.json'}")
    return 0


def _load(args: argparse.Namespace) -> ModelArtifact:
    from mlcore.models.artifact import load_artifact

    # Only an explicit backbone choice is enforced: by default a model brings its own.
    expected = split_names(args.backbones) if getattr(args, "backbones", None) else None
    if expected is None and os.environ.get("FUNDUS_BACKBONES"):
        expected = FeatureConfig.from_env().backbones
    return load_artifact(args.model, backbones=expected)


@_user_errors
def _predict(args: argparse.Namespace) -> int:
    from mlcore.pipelines.predict import expand_image_paths, predict_images

    artifact = _load(args)
    paths = expand_image_paths(args.images)
    predictions = predict_images(
        artifact,
        paths,
        store_dir=args.store or default_store_dir(),
        weights_dir=args.weights_dir or default_weights_dir(),
    )
    labels = artifact.class_labels
    for p in predictions:
        probabilities = " ".join(
            f"{g}:{v:.3f}" for g, v in zip(p.grades, p.probabilities, strict=True)
        )
        note = f" [raw photo, {p.preprocessing} applied]" if p.raw_photo else ""
        print(f"{p.path}\tgrade {p.grade} ({labels.get(p.grade, '')})\t{probabilities}{note}")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["path", "grade", *[f"p_grade_{g}" for g in artifact.classes]])
            for p in predictions:
                writer.writerow([str(p.path), p.grade, *[f"{v:.6f}" for v in p.probabilities]])
        print(f"{len(predictions)} predictions written to {args.csv}", file=sys.stderr)
    return 0


@_user_errors
def _cam(args: argparse.Namespace) -> int:
    from mlcore.pipelines.cam import cam_overlay_png

    artifact = _load(args)
    if not args.image.is_file():
        raise FileNotFoundError(f"no such image: {args.image}")
    result = cam_overlay_png(
        artifact,
        args.image,
        args.out,
        grade=args.grade,
        weights_dir=args.weights_dir or default_weights_dir(),
        alpha=args.alpha,
    )
    probabilities = " ".join(
        f"{g}:{p:.3f}" for g, p in zip(artifact.classes, result.probabilities, strict=True)
    )
    print(
        f"CAM of grade {result.grade} (predicted {result.predicted_grade}; probabilities "
        f"{probabilities}) written to {args.out}"
    )
    return 0


def register(subparsers: Subparsers) -> None:
    """Add the train, evaluate, predict and cam commands to ``python -m mlcore``."""
    _add_train_command(subparsers)
    _add_evaluate_command(subparsers)
    _add_predict_command(subparsers)
    _add_cam_command(subparsers)


def _add_train_command(subparsers: Subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a grading head on labelled images and save a model folder",
        description="Features (computed if missing) -> grouped stratified hold-out -> head -> "
        "model folder with metadata.json, report.json and plots.",
    )
    _add_training_options(train)
    train.add_argument("--out", type=Path, required=True, help="model folder to write")
    train.add_argument(
        "--holdout", type=float, default=0.1, help="share of patients held out (0 = train on all)"
    )
    train.add_argument(
        "--mode",
        choices=("head", "finetune"),
        default="head",
        help="head: a head on cached frozen features (seconds, default); finetune: train the "
        "backbone's top blocks (or all of it) with the head (hours on CPU, minutes on a GPU)",
    )
    _add_finetune_options(train.add_argument_group("fine-tuning (--mode finetune)"))
    train.set_defaults(func=_train)


def _add_finetune_options(finetune: argparse._ArgumentGroup) -> None:
    finetune.add_argument(
        "--backbone",
        default="efficientnet_lite0",
        help="backbone to fine-tune (efficientnet_lite0/1/2, mobilenet_v2, ...)",
    )
    finetune.add_argument(
        "--top-blocks",
        default="all",
        help="EfficientNet-Lite MBConv blocks to train on cached maps of the frozen rest, or "
        "'all' for the whole network on augmented images (default all)",
    )
    finetune.add_argument(
        "--learning-rates",
        default="3e-4",
        help="peak one-cycle learning rates, comma separated; with several, an inner "
        "validation split picks one (default 3e-4)",
    )
    finetune.add_argument("--batch-size", type=int, default=32)
    finetune.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="per-epoch checkpoints (default <out>.checkpoints); rerun to resume",
    )
    finetune.add_argument(
        "--mixed-precision",
        choices=("auto", "on", "off"),
        default="auto",
        help="float16 compute (auto: only on a GPU)",
    )
    finetune.add_argument(
        "--no-flip-averaging",
        action="store_true",
        help="grade each image as it is, not averaged over its 4 mirror flips (4x faster "
        "prediction; the recipe search measured flips worth about +0.007 QWK)",
    )


def _add_evaluate_command(subparsers: Subparsers) -> None:
    evaluate = subparsers.add_parser(
        "evaluate",
        help="k-fold cross-validation report (grouped by patient)",
        description="Grouped, stratified k-fold cross-validation of the whole recipe.",
    )
    _add_training_options(evaluate)
    evaluate.add_argument("--folds", type=int, default=5)
    evaluate.add_argument("--out", type=Path, help="folder for report.json and plots")
    evaluate.set_defaults(func=_evaluate)


def _add_predict_command(subparsers: Subparsers) -> None:
    predict = subparsers.add_parser(
        "predict",
        help="grade images with a model folder",
        description="Prints grade and probabilities per image; folders are searched recursively.",
    )
    predict.add_argument("model", type=Path, metavar="MODEL_DIR")
    predict.add_argument("images", type=Path, nargs="+", metavar="IMAGE_OR_DIR")
    predict.add_argument(
        "--csv", type=Path, help="write path, grade and one probability column per grade"
    )
    _add_store_options(predict)
    predict.set_defaults(func=_predict)


def _add_cam_command(subparsers: Subparsers) -> None:
    cam = subparsers.add_parser(
        "cam",
        help="class activation map of one image as a PNG overlay",
        description="CAM of the predicted grade (or --grade) over the photograph.",
    )
    cam.add_argument("model", type=Path, metavar="MODEL_DIR")
    cam.add_argument("image", type=Path, metavar="IMAGE")
    cam.add_argument("--out", type=Path, required=True, help="PNG to write")
    cam.add_argument("--grade", type=int, help="grade to map (default: the predicted one)")
    cam.add_argument("--alpha", type=float, default=0.45, help="overlay opacity")
    cam.add_argument("--backbones", nargs="+", help="refuse a model not built on these backbones")
    cam.add_argument("--weights-dir", type=Path, help="offline weights (FUNDUS_WEIGHTS_DIR)")
    cam.set_defaults(func=_cam)
