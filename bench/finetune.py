"""Fine-tuning benchmark (issue 10): speed and accuracy of fine-tuned vs head-only models.

Speed, measured in the same run on the same machine (batch 32, the backbone's own resolution):

- the forward-pass bound: inference img/s of the whole network (a training step does a forward
  and a backward pass, so whole-network training cannot beat this rate);
- whole-network training img/s (a few steps of ``top_blocks=None``) and its ratio to the bound;
- the cached-maps route: frozen-bottom img/s (paid once per image and copy) and top-block
  training img/s on the cached maps, epoch time, and their ratios to the bound.

Accuracy: grouped (patient and near-duplicate groups), stratified 5-fold CV on the shared APTOS
set, the same folds for

- head-only: the product default (``HeadClassifier`` on frozen Lite0 + MobileNetV2 features);
- fine-tuned: Lite0's top ``--top-blocks`` MBConv blocks + head conv trained on cached maps.

Every choice of the fine-tuned model (peak learning rate among ``--learning-rates``, the
epoch, the temperature, argmax vs ordinal decoding) is made on an inner grouped validation split
of each outer training fold (:func:`mlcore.models.finetune.finetune_fit`); the outer test fold is
only scored. Checkpoints live in ``--work`` so a killed run resumes where it stopped.

    nice -n 15 timeout 4500 .venv/bin/python bench/finetune.py > var/finetune-bench.log 2>&1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlcore.data.splits import grouped_kfold, merge_groups  # noqa: E402
from mlcore.evaluation.metrics import metrics_report, summarize  # noqa: E402
from mlcore.features.config import FeatureConfig  # noqa: E402
from mlcore.models.classifier import HeadClassifier  # noqa: E402
from mlcore.models.finetune import (  # noqa: E402
    FinetuneConfig,
    build_network,
    cache_bottom_maps,
    environment_flags,
    finetune_fit,
    load_images,
)
from mlcore.pipelines.training import read_labels_csv, source_features  # noqa: E402

HEADLINE = (
    "qwk",
    "accuracy",
    "referable_sensitivity",
    "referable_specificity",
    "referable_auc",
    "ece",
)
TARGET = {"qwk": 0.90, "referable_auc": 0.98, "accuracy": 0.80}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def short(summary: dict) -> dict:
    return {
        name: {"mean": round(summary[name]["mean"], 4), "std": round(summary[name]["std"], 4)}
        for name in HEADLINE
        if summary[name]["mean"] is not None
    }


def pooled(y: np.ndarray, pred: np.ndarray, proba: np.ndarray) -> dict:
    report = metrics_report(y, pred, proba)
    return {
        "n": report["n"],
        "qwk": round(report["qwk"], 4),
        "accuracy": round(report["accuracy"], 4),
        "referable_auc": round(report["referable"]["auc"], 4),
        "referable_sensitivity": round(report["referable"]["sensitivity"], 4),
        "referable_specificity": round(report["referable"]["specificity"], 4),
        "ece": round(report["ece"], 4),
        "confusion": report["confusion"],
    }


def bootstrap_interval(y, pred, proba, metric: str, *, n: int = 1000, seed: int = 0) -> list:
    """95 % percentile bootstrap interval of a pooled out-of-fold metric (images resampled)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        rows = rng.integers(0, y.size, y.size)
        report = metrics_report(y[rows], pred[rows], proba[rows])
        value = report["referable"]["auc"] if metric == "referable_auc" else report[metric]
        if value is not None:
            values.append(value)
    return [
        round(float(np.percentile(values, 2.5)), 4),
        round(float(np.percentile(values, 97.5)), 4),
    ]


def measure_speed(config: FinetuneConfig, images: np.ndarray, *, train_steps: int) -> dict:
    """Forward-pass bound, whole-network training and cached-route rates (img/s)."""
    import keras
    import tensorflow as tf

    from mlcore.features.backbones import get_backbone
    from mlcore.models.finetune import bottom_maps

    spec = get_backbone(config.backbone)
    batch = 32
    x = spec.preprocess(images[:batch].astype(np.float32))

    whole = build_network(FinetuneConfig(backbone=config.backbone, top_blocks=None))
    network = whole.network
    infer = tf.function(lambda inputs: network(inputs, training=False))
    infer(x)  # trace
    started = time.perf_counter()
    repeats = 3
    for _ in range(repeats):
        infer(x)
    forward = repeats * batch / (time.perf_counter() - started)
    log(f"forward-pass bound: {forward:.1f} img/s")

    optimizer = keras.optimizers.AdamW(1e-4)
    y = tf.one_hot(np.arange(batch) % 5, 5)

    @tf.function
    def step(inputs, target):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                keras.losses.categorical_crossentropy(
                    target, network(inputs, training=True), from_logits=True
                )
            )
        grads = tape.gradient(loss, network.trainable_variables)
        optimizer.apply(grads, network.trainable_variables)
        return loss

    step(x, y)  # trace
    started = time.perf_counter()
    for _ in range(train_steps):
        step(x, y)
    whole_train = train_steps * batch / (time.perf_counter() - started)
    log(f"whole-network training: {whole_train:.1f} img/s")

    cached = build_network(config)
    started = time.perf_counter()
    maps = bottom_maps(cached, images[: batch * 2], config=config)
    bottom_rate = batch * 2 / (time.perf_counter() - started)
    top = cached.top
    optimizer_top = keras.optimizers.AdamW(1e-4)

    @tf.function
    def top_step(inputs, target):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                keras.losses.categorical_crossentropy(
                    target, top(inputs, training=True), from_logits=True
                )
            )
        grads = tape.gradient(loss, top.trainable_variables)
        optimizer_top.apply(grads, top.trainable_variables)
        return loss

    m = tf.convert_to_tensor(maps[:batch].astype(np.float32))
    top_step(m, y)
    started = time.perf_counter()
    for _ in range(train_steps * 4):
        top_step(m, y)
    top_train = train_steps * 4 * batch / (time.perf_counter() - started)
    log(f"cached route: bottom {bottom_rate:.1f} img/s, top training {top_train:.1f} img/s")
    return {
        "batch_size": batch,
        "input_size": spec.input_size,
        "forward_bound_img_s": round(forward, 2),
        "whole_network_train_img_s": round(whole_train, 2),
        "whole_network_train_ratio_to_forward": round(whole_train / forward, 3),
        "whole_network_epoch_seconds_2500_images": round(2500 / whole_train, 1),
        "cached_bottom_img_s": round(bottom_rate, 2),
        "cached_top_train_img_s": round(top_train, 2),
        "cached_top_train_ratio_to_forward": round(top_train / forward, 3),
        "cached_top_epoch_seconds_2500_images": round(2500 / top_train, 1),
        "cut_layer": cached.cut_layer,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared/datasets/fundus")
    parser.add_argument("--weights-dir", type=Path, default=REPO.parent / "shared/weights")
    parser.add_argument("--work", type=Path, default=REPO / "var/bench-finetune")
    parser.add_argument("--store", type=Path, default=REPO / "var/bench-finetune/features")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/finetune.json")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-folds", type=int, help="score only the first N outer folds")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--top-blocks", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--learning-rates", default="3e-4,1e-3")
    parser.add_argument("--variants", type=int, default=2)
    parser.add_argument("--speed-steps", type=int, default=3)
    parser.add_argument("--limit", type=int, help="first N images only (smoke runs)")
    parser.add_argument(
        "--skip-speed",
        action="store_true",
        help="keep the speeds already in --out (a resumed accuracy run)",
    )
    parser.add_argument(
        "--speed-only",
        action="store_true",
        help="only measure the speeds, into the 'speed' entry of an existing --out file",
    )
    args = parser.parse_args()
    os.environ.setdefault("FUNDUS_WEIGHTS_DIR", str(args.weights_dir))
    started = time.perf_counter()

    labels = read_labels_csv(
        args.dataset / "labels.csv", groups_file=args.dataset / "near_duplicate_groups.txt"
    )
    paths, y = labels.paths, np.asarray(labels.grades)
    groups = list(labels.groups)
    if args.limit:
        paths, y, groups = paths[: args.limit], y[: args.limit], groups[: args.limit]
    log(f"{y.size} images, {len(set(groups))} groups; grades {np.bincount(y).tolist()}")
    config = FinetuneConfig(
        backbone=args.backbone,
        top_blocks=args.top_blocks,
        epochs=args.epochs,
        learning_rates=tuple(float(v) for v in args.learning_rates.split(",")),
        variants=args.variants,
    )
    results: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            **environment_flags(),
            "note": "2 CPU cores shared by six engineers at the time; no GPU machine was "
            "available to this task",
        },
        "dataset": {"n_images": int(y.size), "n_groups": len(set(groups))},
        "finetune_config": config.as_dict(),
    }

    log("speed: forward bound, whole-network training, cached route")
    sample = None if args.skip_speed else load_images(paths[:64], size=224)
    if args.speed_only:
        previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
        load_before = round(os.getloadavg()[0], 2)
        speed = measure_speed(config, sample, train_steps=args.speed_steps)
        speed["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        speed["load_average_before"] = load_before
        previous.setdefault("speed_runs", []).append(speed)
        write(args.out, previous)
        print(json.dumps(speed, indent=2))
        return 0
    if args.skip_speed and args.out.is_file():
        results["speed"] = json.loads(args.out.read_text()).get("speed", {})
    else:
        load_before = round(os.getloadavg()[0], 2)
        results["speed"] = measure_speed(config, sample, train_steps=args.speed_steps)
        results["speed"]["load_average_before"] = load_before
    write(args.out, results)

    log("head-only baseline features (Lite0 + MobileNetV2, frozen)")
    keys, X = source_features(
        paths,
        feature_config=FeatureConfig(),
        store_dir=args.store,
        weights_dir=args.weights_dir,
    )
    merged = merge_groups(groups, [k.split("#")[0] for k in keys])
    folds = grouped_kfold(y, merged, n_splits=args.folds, seed=2017)
    if args.only_folds:
        folds = folds[: args.only_folds]

    cache_file = args.work / f"bottom-{config.backbone}-{config.top_blocks}-{config.variants}.npy"
    if cache_file.is_file() and np.load(cache_file, mmap_mode="r").shape[1] == y.size:
        cache = np.load(cache_file)
        log(f"bottom maps loaded from {cache_file}")
        cache_seconds = None
    else:
        log(f"caching the frozen bottom's maps of {y.size} images x {config.variants + 1}")
        t0 = time.perf_counter()
        cache = cache_bottom_maps(paths, config=config)
        cache_seconds = time.perf_counter() - t0
        args.work.mkdir(parents=True, exist_ok=True)
        np.save(cache_file, cache)
        log(f"cached in {cache_seconds:.0f} s ({cache.nbytes / 1e6:.0f} MB)")
    results["speed"]["cache_seconds_all_images"] = (
        None if cache_seconds is None else round(cache_seconds, 1)
    )

    head_pred, head_proba = np.zeros(y.size, int), np.zeros((y.size, 5))
    ft_pred, ft_proba = np.zeros(y.size, int), np.zeros((y.size, 5))
    scored = np.zeros(y.size, bool)
    head_reports, ft_reports, fold_info = [], [], []
    for k, (train_idx, test_idx) in enumerate(folds):
        log(f"fold {k + 1}/{len(folds)}: {train_idx.size} train, {test_idx.size} test")
        head = HeadClassifier().fit(X[train_idx], y[train_idx], groups=merged[train_idx])
        proba = head.predict_proba(X[test_idx])
        head_proba[test_idx], head_pred[test_idx] = proba, head.decode(proba)
        head_reports.append(metrics_report(y[test_idx], head_pred[test_idx], proba))
        log(f"  head-only QWK {head_reports[-1]['qwk']:.3f} ({head.decoding_})")

        t0 = time.perf_counter()
        fit = finetune_fit(
            [paths[i] for i in train_idx],
            y[train_idx],
            groups=[merged[i] for i in train_idx],
            config=config,
            checkpoint_dir=args.work / f"fold-{k}",
            bottom_cache=cache[:, train_idx],
            progress=lambda p, m: log(f"  {p}% {m}") if "batch 1/" in m else None,
        )
        # Score the outer fold: the network's top on the cached (un-augmented) maps equals the
        # whole network on the images (the bottom is frozen), at a fraction of the cost.
        from mlcore.models.calibration import apply_temperature
        from mlcore.models.finetune import predict_logits as _predict_logits

        logits = _predict_logits(fit.top, cache[0][test_idx], batch_size=128)
        proba = apply_temperature(logits, fit.model.temperature_)
        ft_proba[test_idx], ft_pred[test_idx] = proba, fit.model.decode(proba)
        ft_reports.append(metrics_report(y[test_idx], ft_pred[test_idx], proba))
        scored[test_idx] = True
        fold_info.append(
            {
                "fold": k,
                "chosen_learning_rate": fit.chosen.learning_rate,
                "best_epoch": fit.chosen.best_epoch,
                "candidates": [
                    {
                        "learning_rate": c.learning_rate,
                        "best_epoch": c.best_epoch,
                        "best_val_loss": round(c.best_val_loss, 4),
                        "train_img_s": None
                        if c.images_per_second is None
                        else round(c.images_per_second, 1),
                        "epoch_seconds": [round(h["seconds"], 1) for h in c.history],
                    }
                    for c in fit.candidates
                ],
                "temperature": round(fit.model.temperature_, 3),
                "decoding": fit.model.decoding_,
                "inner_validation_qwk": fit.model.validation_qwk_,
                "calibration": fit.calibration,
                "seconds": round(time.perf_counter() - t0, 1),
                "head_qwk": round(head_reports[-1]["qwk"], 4),
                "finetuned_qwk": round(ft_reports[-1]["qwk"], 4),
            }
        )
        log(
            f"  fine-tuned QWK {ft_reports[-1]['qwk']:.3f} AUC "
            f"{ft_reports[-1]['referable']['auc']:.3f} acc {ft_reports[-1]['accuracy']:.3f} "
            f"(lr {fit.chosen.learning_rate}, epoch {fit.chosen.best_epoch}, "
            f"{fit.model.decoding_}, T={fit.model.temperature_:.2f})"
        )
        results["folds"] = fold_info
        rows = np.flatnonzero(scored)
        results["head_only"] = {
            "summary": short(summarize(head_reports)),
            "pooled_out_of_fold": pooled(y[rows], head_pred[rows], head_proba[rows]),
        }
        results["finetuned"] = {
            "summary": short(summarize(ft_reports)),
            "pooled_out_of_fold": pooled(y[rows], ft_pred[rows], ft_proba[rows]),
        }
        results["folds_completed"] = k + 1
        write(args.out, results)

    rows = np.flatnonzero(scored)
    results["finetuned"]["intervals_95"] = {
        metric: bootstrap_interval(y[rows], ft_pred[rows], ft_proba[rows], metric)
        for metric in ("qwk", "accuracy", "referable_auc")
    }
    ft_pooled = results["finetuned"]["pooled_out_of_fold"]
    results["target"] = {
        name: {
            "target": value,
            "finetuned": ft_pooled[name],
            "miss": round(value - ft_pooled[name], 4),
        }
        for name, value in TARGET.items()
    }
    results["evaluation"] = (
        f"grouped stratified {args.folds}-fold CV (seed 2017), {rows.size} out-of-fold images"
        + (f", first {args.only_folds} folds only" if args.only_folds else "")
    )
    results["seconds_total"] = round(time.perf_counter() - started, 1)
    write(args.out, results)
    log(f"done in {results['seconds_total']:.0f} s -> {args.out}")
    print(json.dumps({k: results[k] for k in ("speed", "target")}, indent=2))
    return 0


def write(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
