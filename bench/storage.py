"""Object storage (issue 22): extraction throughput with 1 and 2 ML workers sharing a SeaweedFS
bucket, and the grading page's photograph served from S3 against local disk. Both measured in
one run, each with its baseline from the same run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/funduscope_bench_storage \\
    REDIS_URL=redis://127.0.0.1:6379/11 \\
        .venv/bin/python bench/storage.py [--images 192] [--chunk 24] [--requests 300]

1. Extraction: ``--images`` photographs of the shared graded set are stored in the bucket; a
   `features_extract` job splits them into chunks of ``--chunk`` on the `ml` queue. Run once
   with one worker, then (manifest and shards removed, workers restarted with empty caches) with
   two. Each worker is a `celery worker --pool solo` process with its own cache folders; the
   time is the job's, from queued to succeeded, TensorFlow's start in each worker included.
2. Photograph latency: ``GET /images/<id>/file`` (the grading page's photograph) through the
   Django stack in this process (test client, logged in), alternating blocks of 25 requests
   between local storage (the same files under a local MEDIA_ROOT) and the S3 bucket.

The database must be PostgreSQL (the workers share it) and is created if missing; SeaweedFS is
started on free ports of 9300-9399 (tests/s3.py) and removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FUNDUS_SHARED_DIR", REPO.parent / "shared"))


def _database_create(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if exists:
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--chunk", type=int, default=24)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "storage.json")
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")) or "bench" not in database_url:
        print("set DATABASE_URL to a PostgreSQL database whose name says bench (it is recreated)")
        return 2
    photos = sorted((SHARED / "datasets" / "fundus").rglob("*.jpg"))[: args.images]
    if len(photos) < args.images:
        print(f"only {len(photos)} photographs under {SHARED / 'datasets' / 'fundus'}")
        return 1
    sys.path.insert(0, str(REPO))
    from tests.s3 import bucket_create, seaweedfs_start, seaweedfs_stop

    scratch = Path(tempfile.mkdtemp(prefix="funduscope-storage-bench-"))
    server = seaweedfs_start(scratch / "seaweedfs")
    try:
        return _run(args, photos, scratch, server, bucket_create(server), database_url)
    finally:
        seaweedfs_stop(server)
        shutil.rmtree(scratch, ignore_errors=True)


def _run(args: Any, photos: list[Path], scratch: Path, server: Any, bucket: str, db: str) -> int:
    from tests.s3 import s3_environment

    _database_create(db)
    shared_env = {
        "DATABASE_URL": db,
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/11"),
        "FUNDUS_REDIS_KEY_PREFIX": f"bench-storage-{uuid.uuid4().hex[:8]}:",
        "FUNDUS_WEIGHTS_DIR": str(SHARED / "weights"),
        "FUNDUS_FEATURE_CHUNK_IMAGES": str(args.chunk),
        "FUNDUS_QUALITY_GATE": "0",
        **s3_environment(server, bucket),
    }
    os.environ.update(shared_env)
    os.environ.update(
        MEDIA_ROOT=str(scratch / "bench" / "media"),
        FUNDUS_FEATURE_STORE=str(scratch / "bench" / "features"),
        FUNDUS_MODEL_DIR=str(scratch / "bench" / "models"),
        DJANGO_SETTINGS_MODULE="grading.settings",
    )
    import django

    django.setup()
    from django.core.management import call_command

    from grading.models import Patient
    from grading.services.images import image_create, image_validate

    call_command("migrate", verbosity=0)
    patient = Patient.objects.create(pseudonym="BENCH")
    images = [
        image_create(validated=image_validate(data=path.read_bytes()), patient=patient)
        for path in photos
    ]
    extraction = [_extraction_run(workers, scratch, shared_env, len(images)) for workers in (1, 2)]
    latency = _latency(images, scratch, args.requests)
    load = os.getloadavg()
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_after": [round(x, 2) for x in load],
        },
        "backbones": os.environ.get("FUNDUS_BACKBONES", "efficientnet_lite0,mobilenet_v2"),
        "images": len(images),
        "chunk_images": args.chunk,
        "extraction": extraction,
        "photograph_latency": latency,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def _extraction_run(workers: int, scratch: Path, shared_env: dict, n_images: int) -> dict:
    from grading import storage
    from grading.models import FeatureChunk, FeatureShardRow, Job
    from grading.services.jobs import job_enqueue

    FeatureShardRow.objects.all().delete()
    storage.prefix_delete("features")
    processes = []
    for index in range(workers):
        machine = scratch / f"worker-{workers}-{index}"
        env = {
            **os.environ,
            **shared_env,
            "MEDIA_ROOT": str(machine / "media"),
            "FUNDUS_FEATURE_STORE": str(machine / "features"),
            "FUNDUS_MODEL_DIR": str(machine / "models"),
            "CELERY_SKIP_CHECKS": "1",
        }
        command = [
            sys.executable, "-m", "celery", "-A", "grading", "worker", "-Q", "ml",
            "-n", f"bench{index}-{uuid.uuid4().hex[:4]}@%h", "--pool", "solo",
            "--without-heartbeat", "--without-mingle", "--without-gossip", "-l", "WARNING",
        ]  # fmt: skip
        log = (scratch / f"worker-{workers}-{index}.log").open("wb")
        processes.append(
            subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        )
    try:
        time.sleep(8)  # the workers import Django and Celery; TensorFlow loads in the first chunk
        started = time.perf_counter()
        job, _ = job_enqueue(kind=Job.Kind.FEATURES_EXTRACT)
        while True:
            job.refresh_from_db()
            if job.state in (Job.State.SUCCEEDED, Job.State.FAILED):
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        if job.state != Job.State.SUCCEEDED:
            raise RuntimeError(f"extraction with {workers} worker(s) failed: {job.error}")
        chunks = list(FeatureChunk.objects.filter(job=job))
        durations = [
            (c.finished_at - c.started_at).total_seconds()
            for c in chunks
            if c.finished_at and c.started_at
        ]
        return {
            "workers": workers,
            "seconds": round(seconds, 1),
            "images_per_second": round(n_images / seconds, 2),
            "chunks": len(chunks),
            "chunks_by_worker": job.result.get("chunks_by_worker"),
            "chunk_seconds_median": round(statistics.median(durations), 2),
            "chunk_seconds_max": round(max(durations), 2),
        }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def _latency(images: list, scratch: Path, requests: int) -> dict:
    from django.contrib.auth.models import Group, User
    from django.test import Client, override_settings

    from grading import storage

    local_media = scratch / "local-media"
    for image in images:  # the same files on local disk, under the same names
        storage.object_download(name=image.file.name, target=local_media / image.file.name)
    user = User.objects.create_user("bench", password="bench-pass-123")
    user.groups.add(Group.objects.get(name="clinician"))
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    local = override_settings(
        FUNDUS_STORAGE="local",
        MEDIA_ROOT=str(local_media),
        STORAGES={
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        },
    )

    def fetch(image: Any) -> float:
        began = time.perf_counter()
        response = client.get(f"/images/{image.pk}/file")
        body = b"".join(response.streaming_content)
        assert response.status_code == 200 and body, response.status_code
        return (time.perf_counter() - began) * 1000

    # Alternating blocks share the machine's ups and downs. Not request by request: switching
    # STORAGES makes Django build a new storage, and a new S3Storage opens a new boto3 session
    # (about 70 ms), which a server process pays once, not per photograph. The first request of
    # each block is a warm-up, not counted.
    timings: dict[str, list[float]] = {"local": [], "s3": []}
    block = 25
    for start in range(0, requests, block):
        for where in ("local", "s3") if (start // block) % 2 else ("s3", "local"):
            with local if where == "local" else contextlib.nullcontext():
                fetch(images[start % len(images)])
                for index in range(start, min(start + block, requests)):
                    timings[where].append(fetch(images[index % len(images)]))
    summary = {
        where: {
            "requests": len(values),
            "p50_ms": round(statistics.median(values), 2),
            "p95_ms": round(_percentile(values, 0.95), 2),
        }
        for where, values in timings.items()
    }
    summary["s3_overhead_p95_ms"] = round(summary["s3"]["p95_ms"] - summary["local"]["p95_ms"], 2)
    summary["s3_overhead_p50_ms"] = round(summary["s3"]["p50_ms"] - summary["local"]["p50_ms"], 2)
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
