"""Honest registry figures on the shared APTOS set (issue 10): the release model trained on every
confirmed image, then its second stage, k-fold out-of-fold cross-validation with bootstrap 95 %
intervals, on the cached features.

Runs the services the Celery `model_train` and `model_evaluate` tasks run, in this process, on a
scratch database, media folder and feature store (nothing of the development installation is
touched). The dataset is imported and its features are computed first (not timed). Then, timed
in the same run: a retrain on the cached features (the baseline) and the cross-validation of the
version it made; the ratio says what the second stage costs against a retrain.

    .venv/bin/python bench/evaluate.py [--dataset ../shared/datasets/fundus] [--scratch /tmp/...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FUNDUS_SHARED_DIR", REPO.parent / "shared"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=SHARED / "datasets" / "fundus")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/funduscope-evaluate-bench"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "evaluate.json")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if not (args.dataset / "labels.csv").is_file():
        print(f"no dataset at {args.dataset} (labels.csv missing)", file=sys.stderr)
        return 2
    args.scratch.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{args.scratch / 'bench.sqlite3'}")
    os.environ.setdefault("MEDIA_ROOT", str(args.scratch / "media"))
    os.environ.setdefault("FUNDUS_FEATURE_STORE", str(args.scratch / "features"))
    os.environ.setdefault("FUNDUS_MODEL_DIR", str(args.scratch / "models"))
    os.environ.setdefault("FUNDUS_WEIGHTS_DIR", str(SHARED / "weights"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grading.settings")
    sys.path.insert(0, str(REPO))

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from grading.models import Image, Job, ModelVersion
    from grading.services.model_evaluation import model_evaluate
    from grading.services.model_training import model_train_job

    call_command("migrate", verbosity=0)
    if not Image.objects.exists():
        started = time.perf_counter()
        call_command(
            "import_images", str(args.dataset), "--labels", str(args.dataset / "labels.csv"),
            "--source", "import:bench", "--no-progress",
        )  # fmt: skip
        print(f"import (not timed): {time.perf_counter() - started:.0f} s")
    images = Image.objects.count()
    print(
        f"{images} images; backbones {','.join(settings.FUNDUS_BACKBONES)}; "
        f"{settings.FUNDUS_CV_FOLDS} folds; {settings.FUNDUS_BOOTSTRAP_RESAMPLES} resamples; "
        f"{os.cpu_count()} CPUs (shared with other work: timings vary run to run)"
    )
    Job.objects.filter(state__in=(Job.State.QUEUED, Job.State.RUNNING)).update(
        state=Job.State.FAILED
    )

    def quiet(percent: int, message: str = "") -> None:
        return None

    def retrain() -> tuple[ModelVersion, float]:
        job = Job.objects.create(kind=Job.Kind.MODEL_TRAIN, state=Job.State.RUNNING)
        started = time.perf_counter()
        result = model_train_job(job=job, progress=quiet)
        seconds = time.perf_counter() - started
        Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED)
        Job.objects.filter(state__in=(Job.State.QUEUED, Job.State.RUNNING)).update(
            state=Job.State.CANCELLED
        )  # the evaluation it queued: run below, in this process
        return ModelVersion.objects.get(pk=result["model_version_id"]), seconds

    started = time.perf_counter()
    retrain()  # features of every image into the scratch store (not timed as the baseline)
    print(
        f"first retrain, computing features (not the baseline): {time.perf_counter() - started:.0f} s"
    )
    version, retrain_seconds = retrain()
    print(f"retrain on cached features (baseline): {retrain_seconds:.1f} s ({version.name})")
    started = time.perf_counter()
    figures = model_evaluate(version=version, progress=quiet)
    evaluate_seconds = time.perf_counter() - started
    ratio = evaluate_seconds / retrain_seconds
    print(
        f"cross-validation + intervals: {evaluate_seconds:.1f} s "
        f"({ratio:.2f}x the retrain; head fits {sum(figures['fit_seconds']):.1f} s)"
    )
    pooled, intervals = figures["pooled"], figures["intervals"]
    for name, value in (
        ("qwk", pooled["qwk"]),
        ("accuracy", pooled["accuracy"]),
        ("referable_sensitivity", pooled["referable"]["sensitivity"]),
        ("referable_specificity", pooled["referable"]["specificity"]),
        ("referable_auc", pooled["referable"]["auc"]),
        ("ece", pooled["ece"]),
    ):
        low, high = intervals.get(name) or (float("nan"), float("nan"))
        print(f"  {name}: {value:.3f} (95 % interval {low:.3f}-{high:.3f})")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "images": images,
                "backbones": settings.FUNDUS_BACKBONES,
                "folds": figures["folds"],
                "bootstrap_resamples": figures["bootstrap_resamples"],
                "cpus": os.cpu_count(),
                "machine": platform.platform(),
                "note": "2 CPU cores shared with other processes during the run",
                "retrain_cached_seconds": round(retrain_seconds, 1),
                "evaluate_seconds": round(evaluate_seconds, 1),
                "evaluate_over_retrain": round(ratio, 3),
                "fold_fit_seconds": figures["fit_seconds"],
                "decodings": figures["decodings"],
                "n": figures["n"],
                "pooled": {
                    "qwk": pooled["qwk"],
                    "accuracy": pooled["accuracy"],
                    "referable": pooled["referable"],
                    "ece": pooled["ece"],
                },
                "intervals": intervals,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
