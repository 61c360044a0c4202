"""Accuracy benchmark of the grading head on the shared APTOS set (issue 4).

Measures, with 5-fold cross-validation grouped by image (near-duplicates kept together) and
stratified by grade, mean and spread over folds of QWK, accuracy and referable-DR (grade >= 2)
sensitivity / specificity / ROC AUC for:

- (a) the original recipe's *leaky* evaluation: augment every image first, then a random 10 %
  split of the pooled originals + copies (repeated with 5 seeds), vs (b) ours;
- our head vs the recipe's head decoded by argmax vs plain logistic regression on the same
  features;
- preprocessing none / crop / ben_graham (features extracted for each);
- augmentation: 0 vs N copies per training image (and test-time averaging over them);
- head training time on the cached features of the whole dataset (vs logistic regression,
  measured in the same run).

Features are cached in a store (default ``var/bench-accuracy/features``): the first run extracts
them (minutes on 2 cores, hours for many copies), later runs only train heads.

    .venv/bin/python bench/accuracy.py [--variants 5] [--out bench/results/accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlcore.data.augment import AugmentConfig  # noqa: E402
from mlcore.data.splits import grouped_kfold, merge_groups  # noqa: E402
from mlcore.evaluation.metrics import metrics_report, summarize  # noqa: E402
from mlcore.features.config import FeatureConfig  # noqa: E402
from mlcore.models.classifier import HeadClassifier  # noqa: E402
from mlcore.pipelines.training import (  # noqa: E402
    TrainingConfig,
    cross_validate_features,
    read_labels_csv,
    source_features,
    variant_features,
)

HEADLINE = ("qwk", "accuracy", "referable_sensitivity", "referable_specificity", "referable_auc")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def short(summary: dict) -> dict:
    return {
        name: {"mean": round(summary[name]["mean"], 4), "std": round(summary[name]["std"], 4)}
        for name in HEADLINE
        if summary[name]["mean"] is not None
    }


def cv_entry(result, **extra) -> dict:
    return {
        **extra,
        "summary": short(result.summary),
        "pooled": {
            "qwk": round(result.pooled["qwk"], 4),
            "accuracy": round(result.pooled["accuracy"], 4),
            "referable_auc": round(result.pooled["referable"]["auc"], 4),
        },
        "fold_qwk": [round(report["qwk"], 4) for report in result.folds],
        "decodings": result.decodings,
        "head_fit_seconds_mean": round(float(np.mean(result.fit_seconds)), 2),
    }


def decoding_analysis(result, y: np.ndarray, folds) -> dict:
    """The same out-of-fold probabilities decoded three ways: what does ordinal decoding add,
    and how much of it comes from the fitted thresholds rather than fixed k + 0.5 ones?"""
    from mlcore.models.classifier import decode_ordinal, expected_position

    decoders = {
        "as_trained": lambda proba, fold: result.oof_pred[fold],
        "argmax": lambda proba, fold: proba.argmax(axis=1),
        "ordinal_fixed_thresholds": lambda proba, fold: decode_ordinal(
            expected_position(proba), np.arange(proba.shape[1] - 1) + 0.5
        ),
    }
    analysis = {}
    for name, decode in decoders.items():
        reports = []
        for _, test_idx in folds:
            proba = result.oof_proba[test_idx]
            reports.append(metrics_report(y[test_idx], decode(proba, test_idx), proba))
        analysis[name] = short(summarize(reports))
    return analysis


def logistic_cv(X, y, folds, *, C: float) -> dict:
    """Plain multinomial logistic regression on standardised features, argmax grade."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    reports, seconds = [], []
    for train_idx, test_idx in folds:
        started = time.perf_counter()
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000))
        model.fit(X[train_idx], y[train_idx])
        seconds.append(time.perf_counter() - started)
        proba = model.predict_proba(X[test_idx])
        reports.append(metrics_report(y[test_idx], proba.argmax(axis=1), proba))
    return {
        "C": C,
        "summary": short(summarize(reports)),
        "fit_seconds_mean": float(np.mean(seconds)),
    }


def leaky_evaluation(X, X_variants, y, *, make_classifier, repeats: int = 5) -> dict:
    """The original recipe's evaluation: copies first, then a random 10 % split of everything.

    The head's own early-stopping split is random over rows too (no groups), as in the recipe.
    """
    n, v, d = X_variants.shape
    pooled_X = np.concatenate([X, X_variants.reshape(-1, d)])
    pooled_y = np.concatenate([y, np.repeat(y, v)])
    reports = []
    for seed in range(repeats):
        rng = np.random.default_rng(seed)
        order = rng.permutation(pooled_y.size)
        n_test = pooled_y.size // 10
        test_rows, train_rows = order[:n_test], order[n_test:]
        classifier = make_classifier().fit(pooled_X[train_rows], pooled_y[train_rows])
        proba = classifier.predict_proba(pooled_X[test_rows])
        reports.append(metrics_report(pooled_y[test_rows], classifier.decode(proba), proba))
        source = np.concatenate([np.arange(n), np.repeat(np.arange(n), v)])
        shared = np.isin(source[test_rows], source[train_rows]).mean()
        log(
            f"leaky split {seed}: qwk {reports[-1]['qwk']:.3f}, {shared:.0%} of test rows have a copy in training"
        )
    return {
        "summary": short(summarize(reports)),
        "test_rows_with_a_copy_in_training": float(shared),
        "rows": int(pooled_y.size),
    }


def domain_gap(X: np.ndarray, raw_dir: Path, weights_dir: Path) -> dict:
    """How typical raw photographs look to the model after each preprocessing: distance to the
    nearest training image (vs training images' own nearest-neighbour distances) and median |z|
    under the training set's standardisation, on the default backbones' features."""
    from mlcore.data.domain import filter_like_training
    from mlcore.data.preprocessing import PREPROCESSING, load_rgb
    from mlcore.features.extraction import compute_features

    photos = sorted(raw_dir.glob("*.jpg"))
    images = [load_rgb(p, min_size=400) for p in photos]
    mean, std = X.mean(axis=0), X.std(axis=0) + 1e-6
    sample = X[:: max(1, X.shape[0] // 500)]
    squared = (X**2).sum(axis=1)

    def nearest(A: np.ndarray) -> np.ndarray:
        distances = (A**2).sum(axis=1)[:, None] + squared[None, :] - 2 * A @ X.T
        distances[distances < 1e-6] = np.inf  # not its own neighbour
        return np.sqrt(np.maximum(distances.min(axis=1), 0))

    training_nn = nearest(sample)
    result = {
        "photos": len(photos),
        "training_nearest_neighbour": {
            "median": round(float(np.median(training_nn)), 2),
            "p95": round(float(np.percentile(training_nn, 95)), 2),
        },
        "training_median_abs_z": round(float(np.median(np.abs((sample - mean) / std))), 3),
    }
    methods = {
        "none": lambda im: PREPROCESSING["none"](im, 224),
        "ben_graham": lambda im: PREPROCESSING["ben_graham"](im, 224),
        "raw_to_filtered": lambda im: filter_like_training(im, 224),
    }
    for name, function in methods.items():
        P = compute_features(
            [function(im) for im in images], config=FeatureConfig(), weights_dir=weights_dir
        )
        nn = nearest(P)
        result[name] = {
            "nearest_training_image_median": round(float(np.median(nn)), 2),
            "nearest_training_image_max": round(float(nn.max()), 2),
            "median_abs_z": round(float(np.median(np.abs((P - mean) / std))), 3),
        }
    return result


def timed_fits(make_classifier, X, y, repeats: int = 3, **fit_kwargs) -> dict:
    seconds, fit_only = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        classifier = make_classifier().fit(X, y, **fit_kwargs)
        seconds.append(time.perf_counter() - started)
        fit_only.append(classifier.fit_seconds_)
    return {
        "total_seconds_min": round(min(seconds), 2),
        "total_seconds_all": [round(s, 2) for s in seconds],
        "keras_fit_seconds_min": round(min(fit_only), 2),
        "epochs": classifier.n_epochs_,
        "rows": int(X.shape[0]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared/datasets/fundus")
    parser.add_argument("--store", type=Path, default=REPO / "var/bench-accuracy/features")
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=Path(os.environ.get("FUNDUS_WEIGHTS_DIR", REPO.parent / "shared/weights")),
    )
    parser.add_argument("--variants", type=int, default=10, help="augmented copies per image")
    parser.add_argument(
        "--compare-variants",
        type=int,
        nargs="*",
        default=[2, 5],
        help="also evaluate with only the first k copies (k < --variants)",
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--preprocessing", nargs="+", default=["none", "crop", "ben_graham"], help="to compare"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/accuracy.json")
    args = parser.parse_args()

    load_before = os.getloadavg()
    labels = read_labels_csv(
        args.dataset / "labels.csv", groups_file=args.dataset / "near_duplicate_groups.txt"
    )
    y = np.asarray(labels.grades)
    log(f"{y.size} images, {len(set(labels.groups))} groups; grades {np.bincount(y).tolist()}")

    features: dict[str, np.ndarray] = {}
    keys: list[str] = []
    for method in args.preprocessing:
        started = time.perf_counter()
        keys, features[method] = source_features(
            labels.paths,
            feature_config=FeatureConfig(preprocessing=method),
            store_dir=args.store,
            weights_dir=args.weights_dir,
        )
        log(f"features {method}: {features[method].shape} in {time.perf_counter() - started:.0f} s")
    X = features["none"]
    shas = [k.split("#")[0] for k in keys]
    groups = merge_groups(labels.groups, shas)
    folds = grouped_kfold(y, groups, n_splits=args.folds, seed=2017)

    X_variants = None
    if args.variants:
        started = time.perf_counter()
        X_variants = variant_features(
            labels.paths,
            keys,
            n_variants=args.variants,
            augment=AugmentConfig(),
            seed=2017,
            feature_config=FeatureConfig(),
            store_dir=args.store,
            weights_dir=args.weights_dir,
        )
        log(
            f"{args.variants} copies per image: {X_variants.shape} in {time.perf_counter() - started:.0f} s"
        )

    base = TrainingConfig(n_splits=args.folds)
    recipe_head = {"decoding": "argmax", "class_weight": None}
    results: dict = {
        "dataset": str(args.dataset),
        "n_images": int(y.size),
        "grade_counts": np.bincount(y).tolist(),
        "n_groups": int(np.unique(groups).size),
        "folds": args.folds,
        "backbones": list(FeatureConfig().backbones),
        "variants": args.variants,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(v, 2) for v in load_before],
            "python": platform.python_version(),
        },
        "cv": {},
    }

    def run(name: str, Xs, config: TrainingConfig, X_var=None, **extra):
        started = time.perf_counter()
        result = cross_validate_features(
            Xs, y, groups, config=config, X_variants=X_var, folds=folds
        )
        results["cv"][name] = cv_entry(result, **extra)
        s = results["cv"][name]["summary"]
        log(
            f"{name}: qwk {s['qwk']['mean']:.3f}±{s['qwk']['std']:.3f}, "
            f"auc {s['referable_auc']['mean']:.3f}, acc {s['accuracy']['mean']:.3f} "
            f"({time.perf_counter() - started:.0f} s)"
        )
        return result

    ours = run(
        "ours",
        X,
        base,
        description="head: standardised, sqrt class weights, early stopping, ordinal decoding when it wins",
    )
    results["decoding_of_our_probabilities"] = decoding_analysis(ours, y, folds)
    log(f"decodings: {results['decoding_of_our_probabilities']}")
    # The feature store's float16 option rounds each stored value exactly like this cast.
    run(
        "ours_float16_features",
        X.astype(np.float16).astype(np.float32),
        base,
        description="same as ours, features stored as float16",
    )
    run(
        "recipe_head_argmax",
        X,
        replace(base, head=recipe_head),
        description="same head, argmax decoding, no class weights (recipe + early stopping)",
    )
    for method in args.preprocessing:
        if method != "none":
            run(f"ours_preprocessing_{method}", features[method], base, preprocessing=method)
    if X_variants is not None:
        counts = sorted({k for k in args.compare_variants if 0 < k < args.variants})
        for count in [*counts, args.variants]:
            augment = replace(AugmentConfig(), variants=count)
            run(
                f"ours_augment_{count}",
                X,
                replace(base, augment=augment),
                X_variants[:, :count],
                description=f"{count} copies per training image (training folds only)",
            )
            run(
                f"ours_augment_{count}_tta",
                X,
                replace(base, augment=augment, tta=True),
                X_variants[:, :count],
                description="plus test-time averaging over each test image's copies",
            )
        log("leaky evaluation (augment first, random 10 % split)")
        results["leaky_recipe"] = leaky_evaluation(
            X, X_variants, y, make_classifier=lambda: HeadClassifier(**recipe_head)
        )
        results["leaky_ours"] = leaky_evaluation(X, X_variants, y, make_classifier=HeadClassifier)

    log("logistic regression baselines")
    results["logistic_regression"] = {
        "default_C1": logistic_cv(X, y, folds, C=1.0),
        "C0.01": logistic_cv(X, y, folds, C=0.01),
    }

    log("head training time on the whole dataset's cached features")
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    LogisticRegression(C=0.01, max_iter=3000).fit((X - X.mean(0)) / (X.std(0) + 1e-6), y)
    logistic_seconds = time.perf_counter() - started
    timing = {"ours_all_images": timed_fits(HeadClassifier, X, y)}
    timing["logistic_regression_C0.01_seconds"] = round(logistic_seconds, 2)
    timing["ratio_head_to_logistic"] = round(
        timing["ours_all_images"]["total_seconds_min"] / logistic_seconds, 2
    )
    if X_variants is not None:
        n, v, d = X_variants.shape
        rows = np.concatenate([X, X_variants.reshape(-1, d)])
        timing[f"ours_all_images_{v}_copies"] = timed_fits(
            HeadClassifier,
            rows,
            np.concatenate([y, np.repeat(y, v)]),
            repeats=1,
            groups=np.concatenate([groups, np.repeat(groups, v)]),
            variant=np.concatenate([np.zeros(n, int), np.tile(np.arange(1, v + 1), n)]),
        )
    results["head_training_time"] = timing
    log(f"head training: {timing['ours_all_images']}")

    raw_dir = args.dataset.parent / "raw-fundus"
    if raw_dir.is_dir():
        results["raw_photo_domain_gap"] = domain_gap(X, raw_dir, args.weights_dir)
        log(f"domain gap: {results['raw_photo_domain_gap']}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"written {args.out}")
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
