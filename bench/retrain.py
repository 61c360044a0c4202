"""Retraining time on the shared APTOS set (issue 5): a full retrain from scratch (features of
every image + head + predictions of every image) against a retrain whose features are cached.

Runs the same service the Celery `model_train` task runs (``model_train_job``), in this process,
on a scratch database and media folder so that nothing of the development installation is
touched. The dataset is imported first (not timed). Each retrain is timed as a whole and split
into its phases from the job's progress messages.

    .venv/bin/python bench/retrain.py [--dataset ../shared/datasets/fundus] [--scratch /tmp/...]

Environment defaults (set before Django starts): DATABASE_URL=sqlite:////tmp/scratch.sqlite3,
MEDIA_ROOT=/tmp/scratch-media, FUNDUS_FEATURE_STORE and FUNDUS_MODEL_DIR under --scratch,
FUNDUS_WEIGHTS_DIR=../shared/weights, FUNDUS_BACKBONES as configured (default: both backbones).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FUNDUS_SHARED_DIR", REPO.parent / "shared"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=SHARED / "datasets" / "fundus")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/funduscope-retrain-bench"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "retrain.json")
    parser.add_argument(
        "--cached-only",
        action="store_true",
        help="reuse the scratch folder's features (from an earlier run) and time cached retrains",
    )
    parser.add_argument("--repeat", type=int, default=1, help="cached retrains to time")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if not (args.dataset / "labels.csv").is_file():
        print(f"no dataset at {args.dataset} (labels.csv missing)", file=sys.stderr)
        return 2
    args.scratch.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DATABASE_URL", "sqlite:////tmp/scratch.sqlite3")
    os.environ.setdefault("MEDIA_ROOT", "/tmp/scratch-media")
    os.environ.setdefault("FUNDUS_FEATURE_STORE", str(args.scratch / "features"))
    os.environ.setdefault("FUNDUS_MODEL_DIR", str(args.scratch / "models"))
    os.environ.setdefault("FUNDUS_WEIGHTS_DIR", str(SHARED / "weights"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grading.settings")
    sys.path.insert(0, str(REPO))

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from grading.models import Image, Job
    from grading.services.model_training import model_train_job

    call_command("migrate", verbosity=0)
    if not Image.objects.exists():
        started = time.perf_counter()
        call_command(
            "import_images", str(args.dataset), "--labels", str(args.dataset / "labels.csv"),
            "--source", "import:bench", "--no-progress",
        )  # fmt: skip
        print(f"import (not timed below): {time.perf_counter() - started:.0f} s")
    images = Image.objects.count()
    store = Path(settings.FUNDUS_FEATURE_STORE)
    print(
        f"{images} images; backbones {','.join(settings.FUNDUS_BACKBONES)}; store {store}; "
        f"{os.cpu_count()} CPUs (shared with other work: figures vary run to run)"
    )

    def retrain(label: str) -> dict:
        phases: dict[str, float] = {}
        current = {"phase": "start", "since": time.perf_counter()}

        def progress(percent: int, message: str = "") -> None:
            lowered = message.lower()
            if lowered.startswith(("features", "augmented")):
                phase = "features"
            elif lowered.startswith("predict"):
                phase = "predict every image"
            else:  # training the head, epochs, hold-out evaluation, saving
                phase = "head"
            if phase != current["phase"]:
                now = time.perf_counter()
                phases[current["phase"]] = phases.get(current["phase"], 0) + now - current["since"]
                current.update(phase=phase, since=now)

        job = Job.objects.create(kind=Job.Kind.MODEL_TRAIN, state=Job.State.RUNNING)
        started = time.perf_counter()
        result = model_train_job(job=job, progress=progress)
        total = time.perf_counter() - started
        phases[current["phase"]] = (
            phases.get(current["phase"], 0) + time.perf_counter() - current["since"]
        )
        Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED)
        phases.pop("start", None)
        print(
            f"{label}: {total:.1f} s ("
            + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items())
            + f"); {result['model_version']} trained on {result['n_train']} images"
        )
        return {"seconds": round(total, 1), "phases": {k: round(v, 1) for k, v in phases.items()}}

    # A benchmark interrupted earlier may have left its job open; one open retrain is allowed.
    Job.objects.filter(state__in=(Job.State.QUEUED, Job.State.RUNNING)).update(
        state=Job.State.FAILED
    )
    if args.cached_only:
        if not store.is_dir():
            print(f"--cached-only needs the features of an earlier run in {store}", file=sys.stderr)
            return 2
        runs = [retrain("retrain with cached features") for _ in range(args.repeat)]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "images": images,
                    "backbones": settings.FUNDUS_BACKBONES,
                    "cpus": os.cpu_count(),
                    "machine": platform.platform(),
                    "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
                    "cached_runs": runs,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"wrote {args.out}")
        return 0
    shutil.rmtree(store, ignore_errors=True)
    scratch = retrain("retrain from scratch (features + head + predictions)")
    cached = retrain("retrain with cached features")
    ratio = cached["seconds"] / scratch["seconds"]
    print(f"cached / scratch: {ratio:.3f} ({1 / ratio:.1f}x faster)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "images": images,
                "backbones": settings.FUNDUS_BACKBONES,
                "cpus": os.cpu_count(),
                "machine": platform.platform(),
                "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
                "scratch": scratch,
                "cached": cached,
                "cached_over_scratch": round(ratio, 4),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
