"""DICOM in: import throughput of DICOM against JPEG of the same photographs, and C-STORE
instances per second over loopback.

The photographs: a sample of the shared graded set (``--graded N``, 224 px) and of the raw camera
photographs (``--raw N``, 4288 x 2848). Each is wrapped as a synthetic OP instance
(grading.dicom_samples: synthetic identifiers) in the three transfer syntaxes. Per run, on an
empty scratch database: ``images_import`` (what ``manage.py import_images --ungraded`` runs) of the
JPEG files, then of each DICOM syntax; then the same DICOM files sent with pynetdicom in one
association to the listener (``dicom_listener_start``), timed from association to the job's end.
Every import decodes, checks and measures each photograph (the quality gate), as in production.

    python bench/dicom.py [--runs 3] [--graded 100] [--raw 6] [--out bench/results/dicom.json]

Environment defaults (set before Django starts): DATABASE_URL=sqlite:////tmp/bench-dicom.sqlite3,
MEDIA_ROOT=/tmp/bench-dicom-media, REDIS_URL to an unused port (nothing is queued: the rendering
and prediction requests are skipped the same way for every format).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FUNDUS_SHARED_DIR", REPO.parent / "shared"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--graded", type=int, default=100, help="photographs of the graded set")
    parser.add_argument("--raw", type=int, default=6, help="raw camera photographs (12 MP)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "dicom.json")
    return parser.parse_args()


def photographs(graded: int, raw: int) -> list[Path]:
    rng = random.Random(24)
    graded_paths = sorted((SHARED / "datasets" / "fundus").glob("*/*.jpg"))
    raw_paths = sorted((SHARED / "datasets" / "raw-fundus").glob("*.jpg"))
    return sorted(rng.sample(graded_paths, min(graded, len(graded_paths)))) + sorted(
        rng.sample(raw_paths, min(raw, len(raw_paths)))
    )


def build_folders(sources: list[Path], root: Path) -> dict[str, Path]:
    """``root/jpeg`` (the photographs as they are) and one folder of OP instances per syntax."""
    from grading.dicom_samples import SYNTAXES, op_instance_bytes

    folders = {"jpeg-files": root / "jpeg-files"}
    folders["jpeg-files"].mkdir()
    for syntax in SYNTAXES:
        folders[f"dicom-{syntax}"] = root / f"dicom-{syntax}"
        folders[f"dicom-{syntax}"].mkdir()
    for index, source in enumerate(sources):
        data = source.read_bytes()
        shutil.copy(source, folders["jpeg-files"] / f"{index:04d}.jpg")
        for syntax in SYNTAXES:
            instance = op_instance_bytes(
                jpeg=data, syntax=syntax, patient_id=f"SYN-{index % 20:03d}",
                laterality="RL"[index % 2],
            )  # fmt: skip
            (folders[f"dicom-{syntax}"] / f"{index:04d}.dcm").write_bytes(instance)
    return folders


def empty_database() -> None:
    from django.conf import settings

    from grading.models import Grade, Image, Job, Patient

    Grade.objects.all().delete()
    Image.objects.all().delete()
    Patient.objects.all().delete()
    Job.objects.all().delete()
    shutil.rmtree(settings.MEDIA_ROOT, ignore_errors=True)


def time_import(folder: Path) -> dict[str, Any]:
    from grading.services.images import images_import, import_items_ungraded_from_folder

    empty_database()
    items, _ = import_items_ungraded_from_folder(folder)
    started = time.perf_counter()
    summary = images_import(items=items, source="import:bench")
    seconds = time.perf_counter() - started
    if summary.rejected:
        raise SystemExit(f"{folder}: rejected {summary.rejected[:3]}")
    megabytes = sum(path.stat().st_size for path in folder.iterdir()) / 1024**2
    return {"images": summary.imported, "seconds": seconds, "MB": round(megabytes, 1)}


def time_c_store(folder: Path) -> dict[str, Any]:
    import pydicom
    from pynetdicom import AE, build_context

    from grading.dicom_samples import SYNTAXES
    from grading.models import Job
    from grading.services.dicom import OP_SOP_CLASS
    from grading.services.dicom_receiver import dicom_listener_start

    empty_database()
    datasets = [pydicom.dcmread(path) for path in sorted(folder.iterdir())]
    server = dicom_listener_start(
        host="127.0.0.1", port=0, ae_title="FUNDUSCOPE", allowed_aes=["BENCH"], block=False
    )
    try:
        ae = AE(ae_title="BENCH")
        ae.requested_contexts = [build_context(OP_SOP_CLASS, s) for s in SYNTAXES.values()]
        started = time.perf_counter()
        assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="FUNDUSCOPE")
        statuses = [assoc.send_c_store(dataset).Status for dataset in datasets]
        assoc.release()
        while not Job.objects.filter(state=Job.State.SUCCEEDED).exists():
            time.sleep(0.01)
        seconds = time.perf_counter() - started
    finally:
        server.shutdown()
    if set(statuses) != {0}:
        raise SystemExit(f"C-STORE statuses {sorted(set(statuses))}")
    return {"instances": len(datasets), "seconds": seconds}


def main() -> int:
    args = parse_args()
    sources = photographs(args.graded, args.raw)
    if not sources:
        print(f"no photographs under {SHARED / 'datasets'}", file=sys.stderr)
        return 2
    os.environ.setdefault("DATABASE_URL", "sqlite:////tmp/bench-dicom.sqlite3")
    os.environ.setdefault("MEDIA_ROOT", "/tmp/bench-dicom-media")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6390/0")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grading.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    import logging

    from django.core.management import call_command

    logging.disable(logging.WARNING)
    call_command("migrate", verbosity=0)
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-dicom-") as scratch:
        folders = build_folders(sources, Path(scratch))
        for run in range(1, args.runs + 1):
            for name, folder in folders.items():
                results.setdefault(f"import {name}", []).append(time_import(folder))
            for syntax in ("dicom-jpeg", "dicom-raw"):
                results.setdefault(f"c-store {syntax}", []).append(time_c_store(folders[syntax]))
            print(f"run {run} done", file=sys.stderr)
    summary = report(results, sources, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "runs": results}, indent=2) + "\n")
    return 0


def report(results: dict[str, list[dict[str, Any]]], sources: list[Path], args: Any) -> dict:
    print(
        f"{len(sources)} photographs ({args.graded} graded 224 px + {args.raw} raw 12 MP), "
        f"{args.runs} runs, {os.cpu_count()} CPUs (shared: figures vary run to run)"
    )
    summary = {}
    for name, runs in results.items():
        count = runs[0].get("images", runs[0].get("instances"))
        rates = [count / run["seconds"] for run in runs]
        summary[name] = {
            "count": count,
            "per_second_median": round(statistics.median(rates), 1),
            "per_second_runs": [round(rate, 1) for rate in rates],
            "MB": runs[0].get("MB"),
        }
        size = f", {runs[0]['MB']} MB" if "MB" in runs[0] else ""
        print(
            f"{name:22s} {count} in {statistics.median(r['seconds'] for r in runs):6.2f} s median: "
            f"{statistics.median(rates):6.1f}/s (runs: {', '.join(f'{r:.1f}' for r in rates)}{size})"
        )
    return summary


if __name__ == "__main__":
    sys.exit(main())
