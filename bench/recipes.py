"""Recipe search (issue 19): one protocol, written down here before any result was looked at.

Protocol
--------
- Data: the shared graded set (``../shared/datasets/fundus/labels.csv``). Groups: the
  near-duplicate groups of ``near_duplicate_groups.txt`` merged with identical files (sha256);
  a group is one patient, never on both sides of any split.
- Search: one fixed grouped, stratified 80/20 split (:func:`mlcore.data.splits.grouped_holdout`,
  ``test_fraction=0.2``, seed 2017). Every candidate trains on the same 80 % and is scored once
  on the same 20 %. ``--cv 5`` runs grouped stratified 5-fold CV (seed 2017) for a candidate
  instead (the final two candidates), pooling the out-of-fold predictions.
- Every choice a candidate makes (learning rate, epoch, temperature, decoding, ridge penalty,
  thresholds, ensemble decoding) is made on an inner grouped split of its training side only, by
  the mlcore function that trains it; the outer test side is only scored.
- Figures: QWK, exact accuracy, referable AUC and ECE of the test side, each with a 95 %
  percentile bootstrap interval resampling groups (1000 resamples, seed 2017); CPU minutes
  (all threads of this process) and wall minutes, summed over the splits as each was scored
  (an ensemble: its members'); the machine.
- Written down before looking: the candidate list below, their settings, the split and seed.

Usage::

    .venv/bin/python bench/recipes.py --list
    nice -n 15 .venv/bin/python bench/recipes.py --candidate head
    nice -n 15 .venv/bin/python bench/recipes.py --candidate ft_top4_v4 --max-minutes 240
    nice -n 15 .venv/bin/python bench/recipes.py --candidate ft_top4_v4 --cv 5
    .venv/bin/python bench/recipes.py --candidate ft_whole --limit 40 --epochs 1   # smoke run

Each run appends (or replaces) its row, keyed by candidate and protocol, in
``bench/results/recipes.json`` (``--limit`` runs go to ``var/recipes/smoke.json``). Fine-tuning
checkpoints every epoch under ``var/recipes/work``: a run stopped by ``--max-minutes`` (its row
says ``"status": "stopped"`` and how many folds were scored) resumes where it stopped when
started again. Every finished split's scoring (its test rows' probabilities) is kept under
``bench/results/recipes-scored`` and committed, so a CV that outlasts a session resumes at its
next fold in a later session or on a GPU machine (``bench/recipes_remaining.sh``). Candidates that
share a training (``ft_top4_v4`` and ``ft_top4_v4_tta``) share its checkpoints, so the second
costs only its scoring; ensembles reuse their members' stored predictions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlcore.data.splits import grouped_holdout, grouped_kfold, merge_groups  # noqa: E402
from mlcore.evaluation.intervals import metric_intervals  # noqa: E402
from mlcore.evaluation.metrics import metrics_report  # noqa: E402
from mlcore.models.calibration import choose_decoding  # noqa: E402
from mlcore.models.finetune.config import FinetuneConfig  # noqa: E402
from mlcore.pipelines.training import read_labels_csv  # noqa: E402

SEED = 2017
TEST_FRACTION = 0.2
RESAMPLES = 1000
TARGET = {"qwk": 0.90, "accuracy": 0.80, "referable_auc": 0.98}
RESULTS = REPO / "bench/results/recipes.json"
# Each split's finished scoring (the test rows' probabilities, a few kB) is committed: a 5-fold CV
# of a 25-minute recipe outlasts a session on 2 CPU cores, and the next session (or a GPU run)
# resumes it at the next unscored fold.
SCORED = REPO / "bench/results/recipes-scored"

# (probabilities of the test rows, decoded grades, what the candidate chose on its inner split)
Scored = tuple[np.ndarray, np.ndarray, dict[str, Any]]


class TimeUp(Exception):
    """--max-minutes ran out (checkpoints stay; a rerun resumes)."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- data ----------------------------------------------------------------------------------------
@dataclass
class Context:
    """The data and the caches that candidates share within a run."""

    paths: list[Path]
    y: np.ndarray
    groups: np.ndarray
    work: Path
    store: Path
    weights_dir: Path
    scored: Path
    epochs: int | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        # File names, not paths: the tag (and the stored scorings under it) must be the same on
        # any machine and in any checkout.
        digest = hashlib.sha256("\n".join(p.name for p in self.paths).encode()).hexdigest()
        return f"n{len(self.paths)}-{digest[:8]}"


def load_data(args: argparse.Namespace) -> Context:
    labels = read_labels_csv(
        args.dataset / "labels.csv", groups_file=args.dataset / "near_duplicate_groups.txt"
    )
    paths, y = labels.paths, np.asarray(labels.grades, dtype=np.int64)
    shas = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    groups = merge_groups(list(labels.groups or [None] * len(paths)), shas)
    if args.limit:
        _, keep = grouped_holdout(
            y, groups, test_fraction=min(0.99, args.limit / y.size), seed=SEED
        )
        paths, y = [paths[i] for i in keep], y[keep]
        groups = merge_groups(groups[keep])
    return Context(
        paths=paths,
        y=y,
        groups=groups,
        work=args.work,
        scored=args.scored,
        store=args.store,
        weights_dir=args.weights_dir,
        epochs=args.epochs,
    )


def head_features(ctx: Context, variants: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Frozen Lite0 + MobileNetV2 features of every image (the product default), and of
    ``variants`` augmented copies of each (n, v, d) when asked."""
    from mlcore.data.augment import AugmentConfig
    from mlcore.features.config import FeatureConfig
    from mlcore.pipelines.training import source_features, variant_features

    if "features" not in ctx.cache:
        ctx.cache["features"] = source_features(
            ctx.paths, feature_config=FeatureConfig(), store_dir=ctx.store,
            weights_dir=ctx.weights_dir,
        )  # fmt: skip
    keys, X = ctx.cache["features"]
    if not variants:
        return X, None
    X_variants = variant_features(
        ctx.paths, keys, n_variants=variants, augment=AugmentConfig(), seed=SEED,
        feature_config=FeatureConfig(), store_dir=ctx.store, weights_dir=ctx.weights_dir,
    )  # fmt: skip
    return X, X_variants


def bottom_cache(ctx: Context, config: FinetuneConfig) -> np.ndarray:
    """The frozen bottom's maps of every image and of its augmented copies, computed once and
    kept on disk (the bottom is frozen ImageNet layers: it sees no grade)."""
    from mlcore.models.finetune import cache_bottom_maps

    name = f"maps-{config.backbone}-top{config.top_blocks}-v{config.variants}-{ctx.tag}.npy"
    path = ctx.work / "maps" / name
    if path.is_file():
        return np.load(path, mmap_mode="r")
    log(f"caching the frozen bottom's maps: {len(ctx.paths)} images x {config.variants + 1}")
    maps = cache_bottom_maps(ctx.paths, config=config, weights_dir=ctx.weights_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, maps)
    return maps


def images_at(ctx: Context, size: int) -> np.ndarray:
    from mlcore.models.finetune import load_images

    key = f"images-{size}"
    if key not in ctx.cache:
        ctx.cache[key] = load_images(ctx.paths, size=size)
    return np.asarray(ctx.cache[key])


# -- candidates ----------------------------------------------------------------------------------
def run_head(ctx: Context, train: np.ndarray, test: np.ndarray, **options: Any) -> Scored:
    from mlcore.models.classifier import HeadClassifier, predict_with_tta
    from mlcore.pipelines.training import fit_head

    variants = int(options.pop("variants", 0))
    X, X_variants = head_features(ctx, variants)
    head = HeadClassifier(**options)
    train_variants = None if X_variants is None else X_variants[train]
    fit_head(head, X[train], ctx.y[train], ctx.groups[train], train_variants)
    test_variants = None if X_variants is None else X_variants[test]
    proba = predict_with_tta(head, X[test], test_variants)
    info = {"decoding": head.decoding_, "temperature": head.temperature_, "epochs": head.n_epochs_}
    return proba, head.decode(proba), info


def run_regression(ctx: Context, train: np.ndarray, test: np.ndarray, **options: Any) -> Scored:
    from mlcore.models.regression import RegressionHead

    X, _ = head_features(ctx)
    head = RegressionHead(**options).fit(X[train], ctx.y[train], groups=ctx.groups[train])
    info = {"alpha": head.alpha_, "thresholds": [float(t) for t in head.thresholds_]}
    return head.predict_proba(X[test]), head.predict(X[test]), info


def _finetune_config(ctx: Context, options: dict[str, Any]) -> FinetuneConfig:
    config = FinetuneConfig(**options)
    return config if ctx.epochs is None else replace(config, epochs=ctx.epochs)


def _config_folder(ctx: Context, config: FinetuneConfig, split: str) -> Path:
    digest = hashlib.sha256(json.dumps(config.as_dict(), sort_keys=True).encode()).hexdigest()
    return ctx.work / "work" / ctx.tag / split / digest[:12]


def run_finetune(
    ctx: Context, train: np.ndarray, test: np.ndarray, *, split: str, tta: bool = False,
    **options: Any,
) -> Scored:  # fmt: skip
    """Fine-tune on the training rows (inner split: learning rate, epoch, temperature,
    decoding), score the test rows, with flip (and augmented-copy) averaging when ``tta``."""
    from mlcore.models.calibration import apply_temperature
    from mlcore.models.finetune import finetune_fit, predict_logits
    from mlcore.models.finetuned import NO_FLIPS, averaged_proba

    config = _finetune_config(ctx, options)
    fit_kwargs: dict[str, Any] = {}
    if config.cached:
        maps = bottom_cache(ctx, config)
        fit_kwargs["bottom_cache"] = np.asarray(maps[:, train])
    else:
        from mlcore.features.backbones import get_backbone

        images = images_at(ctx, get_backbone(config.backbone).input_size)
        fit_kwargs["images"] = images[train]
    fit = finetune_fit(
        [ctx.paths[i] for i in train], ctx.y[train], groups=list(ctx.groups[train]),
        config=config, checkpoint_dir=_config_folder(ctx, config, split),
        weights_dir=ctx.weights_dir, progress=_progress, **fit_kwargs,
    )  # fmt: skip
    temperature = fit.model.temperature_
    if config.cached:
        # The top on the cached maps is the whole network on the images (the bottom is frozen).
        def proba_of(inputs: np.ndarray) -> np.ndarray:
            return apply_temperature(predict_logits(fit.top, inputs, batch_size=128), temperature)

        versions = [np.asarray(maps[v, test]) for v in range(maps.shape[0])] if tta else None
        test_inputs = np.asarray(maps[0, test])
    else:
        # The candidate, not the model's default, says whether flips are averaged.
        def proba_of(inputs: np.ndarray) -> np.ndarray:
            return fit.model.predict_proba(inputs, flips=NO_FLIPS)

        versions = [images[test]] if tta else None
        test_inputs = images[test]
    proba = averaged_proba(proba_of, versions) if versions else proba_of(test_inputs)
    info = {
        "learning_rate": fit.chosen.learning_rate,
        "best_epoch": fit.chosen.best_epoch,
        "temperature": temperature,
        "decoding": fit.model.decoding_,
        "train_seconds": round(fit.train_seconds, 1),
        "config": config.as_dict(),
    }
    if tta:
        # The same training scored without test-time averaging: stored for the sibling
        # candidate by Candidate.score, so the pair costs one training (also across sessions).
        plain = proba_of(test_inputs)
        info["without_tta"] = {"proba": plain, "pred": fit.model.decode(plain)}
    return proba, fit.model.decode(proba), info


def _progress(percent: int, message: str) -> None:
    if "batch 1/" in message or "frozen" in message or percent >= 96:
        log(f"  {percent}% {message}")


def run_fold_ensemble(
    ctx: Context, train: np.ndarray, test: np.ndarray, *, split: str, member: str, k: int = 5
) -> Scored:
    """k models of ``member``, one per grouped inner fold of the training rows, their test
    probabilities averaged; the decoding is chosen on the inner folds' out-of-fold predictions."""
    folds = grouped_kfold(ctx.y[train], ctx.groups[train], n_splits=k, seed=SEED)
    inner_proba = np.zeros((train.size, 5))
    test_probas, member_infos = [], []
    for f, (inner_train, inner_test) in enumerate(folds):
        rows = np.concatenate([train[inner_test], test])
        proba, _, info = CANDIDATES[member].score(
            ctx, train[inner_train], rows, f"{split}-inner{f}"
        )
        member_infos.append(info)
        inner_proba[inner_test] = proba[: inner_test.size]
        test_probas.append(proba[inner_test.size :])
    decoding = choose_decoding(inner_proba, ctx.y[train], mode="auto", seed=SEED)
    proba = np.mean(test_probas, axis=0)
    info = {"members": k, "decoding": decoding.as_dict(), "cost": total_cost(member_infos)}
    return proba, decoding.positions(proba), info


def run_blend(
    ctx: Context, train: np.ndarray, test: np.ndarray, *, split: str, members: Sequence[str]
) -> Scored:
    """The members' calibrated test probabilities averaged, decoded by argmax (the members'
    inner splits differ, so there are no inner predictions common to all to tune a decoding)."""
    scored = [CANDIDATES[m].score(ctx, train, test, split) for m in members]
    proba = np.mean([proba for proba, _, _ in scored], axis=0)
    info = {
        "members": list(members),
        "decoding": "argmax",
        "cost": total_cost([info for _, _, info in scored]),
    }
    return proba, proba.argmax(axis=1), info


@dataclass(frozen=True)
class Candidate:
    name: str
    description: str
    run: Callable[..., Scored]
    options: dict[str, Any] = field(default_factory=dict)
    takes_split: bool = False

    def stored_at(self, ctx: Context, train: np.ndarray, test: np.ndarray, split: str) -> Path:
        settings = json.dumps(self.options, sort_keys=True, default=str).encode()
        digest = hashlib.sha256(settings + _rows_digest(train, test).encode()).hexdigest()[:12]
        stored = ctx.scored / ctx.tag / split / f"{self.name}-{digest}.json"
        if ctx.epochs is not None:
            stored = stored.with_name(f"{self.name}-{digest}-e{ctx.epochs}.json")
        return stored

    def score(self, ctx: Context, train: np.ndarray, test: np.ndarray, split: str) -> Scored:
        """Train on ``train`` and score ``test``; finished scorings are kept on disk, keyed by
        the candidate's settings and rows (ensembles and reruns reuse them)."""
        stored = self.stored_at(ctx, train, test, split)
        if stored.is_file():
            saved = json.loads(stored.read_text())
            return np.asarray(saved["proba"]), np.asarray(saved["pred"]), saved["info"]
        options = dict(self.options)
        if self.takes_split:
            options["split"] = split
        cpu, wall = time.process_time(), time.perf_counter()
        proba, pred, info = self.run(ctx, train, test, **options)
        # Ensembles carry their members' costs (members may come from earlier runs' scorings).
        info.setdefault("cost", {
            "cpu_minutes": round((time.process_time() - cpu) / 60, 2),
            "wall_minutes": round((time.perf_counter() - wall) / 60, 2),
        })  # fmt: skip
        plain = info.pop("without_tta", None)
        _store(stored, proba, pred, info)
        sibling = next(
            (
                c
                for c in CANDIDATES.values()
                if c.run is self.run
                and c.options == {k: v for k, v in self.options.items() if k != "tta"}
            ),
            None,
        )
        if plain is not None and sibling is not None and sibling is not self:
            _store(sibling.stored_at(ctx, train, test, split), plain["proba"], plain["pred"], info)
        return proba, pred, info


def _store(path: Path, proba: np.ndarray, pred: np.ndarray, info: dict[str, Any]) -> None:
    """A split's scoring as JSON: results (the held-out rows' probabilities and grades), readable
    and diffable, never model weights or features."""
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {
        "proba": np.round(np.asarray(proba, dtype=float), 6).tolist(),
        "pred": np.asarray(pred).astype(int).tolist(),
        "info": info,
    }
    path.write_text(json.dumps(saved, default=float) + "\n")


def split_cost(info: dict[str, Any]) -> dict[str, Any]:
    """What a split's scoring cost, as recorded with it (None for scorings stored before costs
    were: a fine-tuning's ``train_seconds`` is no stand-in, a resumed run counts only its part)."""
    return dict(info["cost"]) if "cost" in info else {"cpu_minutes": None, "wall_minutes": None}


def total_cost(infos: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summed cost of several splits' (or members') scorings, of those whose cost was
    recorded; ``partial`` says how many parts are missing from the sum."""
    costs = [split_cost(info) for info in infos]
    known = [c for c in costs if c["cpu_minutes"] is not None]
    total: dict[str, Any] = {
        key: round(sum(c[key] for c in known), 2) for key in ("cpu_minutes", "wall_minutes")
    }
    missing = len(costs) - len(known) + sum("partial" in c for c in known)
    if missing:
        total["partial"] = f"{missing} of {len(costs)} parts scored before costs were recorded"
    return total


def _rows_digest(train: np.ndarray, test: np.ndarray) -> str:
    return hashlib.sha256(train.tobytes() + b"|" + test.tobytes()).hexdigest()[:10]


# The fine-tune defaults when this list was written (top 4 blocks, 8 epochs, the inner split
# picking the peak rate among two), pinned: the library's defaults have since become the whole
# network's, and a candidate must stay what the protocol wrote down.
WRITTEN = {"top_blocks": 4, "epochs": 8, "learning_rates": (3e-4, 1e-3)}
FT = {**WRITTEN, "variants": 4}  # the cached route's base for the variations below


def _candidates() -> dict[str, Candidate]:
    ft, blend, folds = run_finetune, run_blend, run_fold_ensemble
    items = [
        Candidate("head", "head on frozen Lite0+MobileNetV2 features (today's default)", run_head),
        Candidate("head_tta", "head + 4 augmented copies per image, test-time averaged",
                  run_head, {"variants": 4}),
        Candidate("head_regression", "ridge regression of the grade, QWK thresholds (inner split)",
                  run_regression),
        Candidate("head_smooth", "head with label smoothing 0.1", run_head,
                  {"label_smoothing": 0.1}),
        Candidate("head_folds5", "5 heads on inner folds, averaged", folds, {"member": "head"},
                  True),
        Candidate("ft_top4", "Lite0 top 4 blocks, 1 augmented map/image, 8 epochs (today's "
                  "fine-tune default)", ft, {**WRITTEN, "variants": 1}, True),
        Candidate("ft_top4_v4", "Lite0 top 4 blocks, 4 augmented maps/image, 10 epochs", ft,
                  {**FT, "epochs": 10}, True),
        Candidate("ft_top4_v4_tta", "ft_top4_v4 + test-time averaging (maps x flips)", ft,
                  {**FT, "epochs": 10, "tta": True}, True),
        Candidate("ft_top4_v4_smooth", "ft_top4_v4 with label smoothing 0.1", ft,
                  {**FT, "epochs": 10, "label_smoothing": 0.1}, True),
        Candidate("ft_top4_v4_ordinal", "ft_top4_v4, ordinal thresholds always (inner split)", ft,
                  {**FT, "epochs": 10, "decoding": "ordinal"}, True),
        Candidate("ft_top8_v6", "Lite0 top 8 blocks, 6 augmented maps/image, 12 epochs", ft,
                  {**FT, "top_blocks": 8, "variants": 6, "epochs": 12}, True),
        Candidate("ft_whole", "whole Lite0, one-cycle, 20 epochs, augmentation on the fly", ft,
                  {"top_blocks": None, "epochs": 20, "learning_rates": (3e-4,)}, True),
        Candidate("ft_whole_tta", "ft_whole + flip averaging", ft,
                  {"top_blocks": None, "epochs": 20, "learning_rates": (3e-4,), "tta": True},
                  True),
        Candidate("ft_lite1_top4_v4", "Lite1 (240 px) top 4 blocks, 4 maps/image, 10 epochs", ft,
                  {**FT, "epochs": 10, "backbone": "efficientnet_lite1"}, True),
        Candidate("ft_lite2_top4_v4", "Lite2 (260 px) top 4 blocks, 4 maps/image, 10 epochs", ft,
                  {**FT, "epochs": 10, "backbone": "efficientnet_lite2"}, True),
        Candidate("ens_ft_head", "ft_top4_v4_tta and head averaged", blend,
                  {"members": ("ft_top4_v4_tta", "head")}, True),
        Candidate("ens_whole_head", "ft_whole_tta and head averaged", blend,
                  {"members": ("ft_whole_tta", "head")}, True),
        Candidate("ens_ft_folds5", "5 ft_top4_v4_tta models on inner folds, averaged", folds,
                  {"member": "ft_top4_v4_tta"}, True),
    ]  # fmt: skip
    return {c.name: c for c in items}


CANDIDATES = _candidates()


# -- scoring and results -------------------------------------------------------------------------
def figures(y: np.ndarray, pred: np.ndarray, proba: np.ndarray, groups: np.ndarray) -> dict:
    report = metrics_report(y, pred, proba)
    intervals = metric_intervals(
        y, pred, proba, groups=list(groups), n_resamples=RESAMPLES, seed=SEED
    )
    values = {
        "qwk": report["qwk"],
        "accuracy": report["accuracy"],
        "referable_auc": report["referable"]["auc"],
        "ece": report["ece"],
    }
    out: dict[str, Any] = {
        name: {
            "value": None if value is None else round(float(value), 4),
            "ci95": None if intervals[name] is None else [round(v, 4) for v in intervals[name]],
        }
        for name, value in values.items()
    }
    out["ece_decoded"] = report["ece_decoded"]
    out["undefined_resamples"] = intervals["undefined_resamples"]
    out["referable_sensitivity"] = report["referable"]["sensitivity"]
    out["referable_specificity"] = report["referable"]["specificity"]
    out["confusion"] = report["confusion"]
    out["miss"] = {
        name: round(target - float(values[name] or 0.0), 4) for name, target in TARGET.items()
    }
    return out


def machine() -> dict[str, Any]:
    import tensorflow as tf

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "tensorflow": tf.__version__,
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }


def splits(ctx: Context, cv: int | None) -> tuple[str, list[tuple[np.ndarray, np.ndarray]]]:
    if cv:
        return f"cv{cv}", grouped_kfold(ctx.y, ctx.groups, n_splits=cv, seed=SEED)
    train, test = grouped_holdout(ctx.y, ctx.groups, test_fraction=TEST_FRACTION, seed=SEED)
    return "holdout80-20", [(train, test)]


def evaluate(ctx: Context, candidate: Candidate, cv: int | None) -> dict[str, Any]:
    protocol, folds = splits(ctx, cv)
    proba = np.zeros((ctx.y.size, 5))
    pred = np.zeros(ctx.y.size, np.int64)
    scored = np.zeros(ctx.y.size, bool)
    choices = []
    ctx.cache["splits"] = (0, len(folds))
    for f, (train, test) in enumerate(folds):
        log(f"{candidate.name}: {protocol} split {f + 1}/{len(folds)}, {train.size} train, "
            f"{test.size} test")  # fmt: skip
        fold_proba, fold_pred, info = candidate.score(ctx, train, test, f"{protocol}-{f}")
        proba[test], pred[test], scored[test] = fold_proba, fold_pred, True
        choices.append(info)
        ctx.cache["splits"] = (f + 1, len(folds))
    rows = np.flatnonzero(scored)
    return {
        "protocol": protocol,
        "n_images": int(ctx.y.size),
        "n_scored": int(rows.size),
        "n_groups_scored": int(np.unique(ctx.groups[rows]).size),
        "figures": figures(ctx.y[rows], pred[rows], proba[rows], ctx.groups[rows]),
        "choices": choices,
    }


def write_row(out: Path, row: dict[str, Any]) -> None:
    results = json.loads(out.read_text()) if out.is_file() else {}
    results["protocol"] = __doc__.split("Usage::")[0].strip()
    kept = [
        r
        for r in results.get("rows", [])
        if (r["candidate"], r.get("protocol")) != (row["candidate"], row.get("protocol"))
    ]
    results["rows"] = [*kept, row]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float) + "\n")


def run(args: argparse.Namespace) -> int:
    candidate = CANDIDATES[args.candidate]
    ctx = load_data(args)
    log(f"{ctx.y.size} images, {np.unique(ctx.groups).size} groups, "
        f"grades {np.bincount(ctx.y, minlength=5).tolist()}")  # fmt: skip
    row: dict[str, Any] = {
        "candidate": candidate.name,
        "description": candidate.description,
        "protocol": f"cv{args.cv}" if args.cv else "holdout80-20",
        "machine": machine(),
        "limit": args.limit,
        "epochs_override": args.epochs,
    }
    wall, cpu = time.perf_counter(), time.process_time()
    if args.max_minutes:
        signal.signal(signal.SIGALRM, _time_up)
        signal.alarm(int(args.max_minutes * 60))
    try:
        row.update(evaluate(ctx, candidate, args.cv))
        row["status"] = "done"
    except TimeUp:
        done, total = ctx.cache.get("splits", (0, 0))
        row["status"] = (
            f"stopped after --max-minutes {args.max_minutes} with {done} of {total} splits "
            "scored; rerun to resume"
        )
    finally:
        signal.alarm(0)
    row["this_run"] = {
        "cpu_minutes": round((time.process_time() - cpu) / 60, 2),
        "wall_minutes": round((time.perf_counter() - wall) / 60, 2),
    }
    # A resumed CV spends little in its last run: the row's minutes are its splits' own, as
    # recorded when each was scored (in this run or an earlier one).
    cost = total_cost(row.get("choices") or [{"cost": row["this_run"]}])
    row["cpu_minutes"], row["wall_minutes"] = cost["cpu_minutes"], cost["wall_minutes"]
    if "partial" in cost:
        row["minutes_partial"] = cost["partial"]
    row["finished_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    write_row(args.out, row)
    log(json.dumps({k: row.get(k) for k in ("candidate", "status", "cpu_minutes")}))
    if "figures" in row:
        log(json.dumps({k: row["figures"][k] for k in ("qwk", "accuracy", "referable_auc", "ece")}))
    return 0 if row["status"] == "done" else 3


def table(results: Path) -> str:
    """The README's markdown table of every row in ``results`` (figures with 95 % intervals)."""

    def cell(figure: dict[str, Any] | None) -> str:
        if not figure or figure.get("value") is None:
            return "—"
        ci = figure.get("ci95")
        return f"{figure['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    lines = [
        "| candidate | protocol | QWK [95 % CI] | accuracy | referable AUC | ECE | CPU min | wall min |",
        "|---|---|---|---|---|---|---:|---:|",
    ]
    rows = json.loads(results.read_text()).get("rows", []) if results.is_file() else []
    for row in sorted(rows, key=lambda r: (r.get("protocol", ""), r["candidate"])):
        f = row.get("figures") or {}
        lines.append(
            f"| `{row['candidate']}` | {row.get('protocol')}"
            + ("" if row.get("status") == "done" else f" ({row.get('status')})")
            + f" | {cell(f.get('qwk'))} | {cell(f.get('accuracy'))} | "
            f"{cell(f.get('referable_auc'))} | {cell(f.get('ece'))} | "
            f"{row.get('cpu_minutes')}{'*' if row.get('minutes_partial') else ''} | "
            f"{row.get('wall_minutes')} |"
        )
    if any(row.get("minutes_partial") for row in rows):
        lines.append(
            "\n\\* the splits whose cost was recorded only; the others were scored before costs "
            "were stored (`minutes_partial` in the row)"
        )
    return "\n".join(lines)


def _time_up(signum: int, frame: Any) -> None:
    raise TimeUp()


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidate", choices=sorted(CANDIDATES))
    parser.add_argument("--list", action="store_true", help="list the candidates and exit")
    parser.add_argument("--table", action="store_true", help="print the README table of --out")
    parser.add_argument("--cv", type=int, help="grouped k-fold CV instead of the 80/20 split")
    parser.add_argument("--max-minutes", type=float, help="stop (resumably) after this long")
    parser.add_argument("--limit", type=int, help="about N images only (smoke runs)")
    parser.add_argument("--epochs", type=int, help="override fine-tuning epochs (smoke runs)")
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared/datasets/fundus")
    parser.add_argument("--weights-dir", type=Path, default=REPO.parent / "shared/weights")
    parser.add_argument("--work", type=Path, default=REPO / "var/recipes")
    parser.add_argument("--store", type=Path, help="feature store (default WORK/features)")
    parser.add_argument(
        "--scored", type=Path, help="finished scorings (default bench/results/recipes-scored)"
    )
    parser.add_argument(
        "--out", type=Path, help="results file (default bench/results/recipes.json)"
    )
    args = parser.parse_args(argv)
    args.store = args.store or args.work / "features"
    smoke = bool(args.limit or args.epochs)
    args.scored = args.scored or (args.work / "scored" if smoke else SCORED)
    if args.out is None:
        args.out = args.work / "smoke.json" if smoke else RESULTS
    if not (args.list or args.table or args.candidate):
        parser.error("give --candidate NAME (or --list)")
    if args.cv is not None and args.cv < 2:
        parser.error("--cv needs at least 2 folds")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.table:
        print(table(args.out))
        return 0
    if args.list:
        for c in CANDIDATES.values():
            print(f"{c.name:22s} {c.description}")
        return 0
    os.environ.setdefault("FUNDUS_WEIGHTS_DIR", str(args.weights_dir))
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
