"""Memory of the streaming CSV exports: tracemalloc peak while a client reads the whole response.

Builds a throw-away database (SQLite in a temporary folder by default, or the PostgreSQL database
named by --database-url, whose test database is created and dropped), fills it with N grades and N
predictions by bulk_create, and reads /export/grades.csv and /export/predictions.csv through the
Django test client for N = 10,000 and N = 100,000. The baseline, measured in the same run, is the
same rows materialised as a list and written into one HttpResponse (what a non-streaming export does).

    .venv/bin/python bench/export_memory.py
    .venv/bin/python bench/export_memory.py --database-url postgres://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="", help="default: a temporary SQLite file")
    parser.add_argument("--sizes", default="10000,100000", help="comma list of row counts")
    return parser.parse_args()


def setup_django(database_url: str) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="funduscope-bench-"))
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grading.settings")
    os.environ["MEDIA_ROOT"] = str(workdir / "media")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    return workdir


def fill(total: int, state: dict) -> None:
    """Grow the database to ``total`` grades and ``total`` predictions (10 versions x images)."""
    from django.contrib.auth.models import Group, User

    from grading.models import Grade, Image, ModelVersion, Patient, Prediction

    if "user" not in state:
        state["user"] = User.objects.create_user("bench-reviewer", password="x")
        state["user"].groups.add(Group.objects.get(name="reviewer"))
        state["patient"] = Patient.objects.create(pseudonym="BENCH-1")
        state["versions"] = [
            ModelVersion.objects.create(name=f"bench-v{i}", class_values=[0, 1, 2, 3, 4])
            for i in range(10)
        ]
        state["images"] = []
        state["grades"] = 0
    versions = state["versions"]
    needed_images = total // len(versions)
    new_images = [
        Image(
            patient=state["patient"],
            eye="L" if i % 2 else "R",
            file=f"images/bench/{i}.jpg",
            sha256=hashlib.sha256(f"bench-{i}".encode()).hexdigest(),
            width=224,
            height=224,
            grading_state="confirmed",
            confirmed_grade_id=i % 5,
            confirmation_method="import",
        )
        for i in range(len(state["images"]), needed_images)
    ]
    created = Image.objects.bulk_create(new_images, batch_size=2000)
    for version in versions:
        Prediction.objects.bulk_create(
            [
                Prediction(
                    image=image,
                    model_version=version,
                    predicted_grade_id=image.confirmed_grade_id,
                    probabilities=[0.1, 0.1, 0.2, 0.3, 0.3],
                )
                for image in created
            ],
            batch_size=2000,
        )
    state["images"] += created
    images = state["images"]
    Grade.objects.bulk_create(
        [
            Grade(
                image=images[i % len(images)],
                grader=state["user"],
                grade_id=i % 5,
                notes=f"bench note {i}",
            )
            for i in range(state["grades"], total)
        ],
        batch_size=2000,
    )
    state["grades"] = total


def measure(fn) -> tuple[int, int, float]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        size = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, size, time.perf_counter() - started


def main() -> None:
    args = parse_args()
    workdir = setup_django(args.database_url)
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()
    # A database of our own: never the test database name other test runs may be using.
    if connection.vendor == "sqlite":
        test_name = str(Path(connection.settings_dict["NAME"]).with_name("bench-test.sqlite3"))
    else:
        test_name = f"test_funduscope_bench_export_{os.getpid()}"
    connection.settings_dict["TEST"]["NAME"] = test_name
    test_db = connection.creation.create_test_db(verbosity=0, keepdb=False)
    try:
        from django.http import HttpResponse

        from grading.selectors.exports import grades_export_rows, predictions_export_rows
        from grading.views.review import csv_lines

        sizes = [int(size) for size in args.sizes.split(",")]
        state: dict = {}
        client = Client()
        print(f"database: {connection.vendor} ({test_db})")
        print(
            f"{'rows':>8} {'export':<12} {'streaming peak':>15} {'list+HttpResponse peak':>23} "
            f"{'CSV size':>10} {'stream s':>9}"
        )
        results: dict[tuple[str, int], int] = {}
        for size in sizes:
            fill(size, state)
            client.force_login(state["user"])
            for name, url, rows in (
                ("grades", "/export/grades.csv", grades_export_rows),
                ("predictions", "/export/predictions.csv", predictions_export_rows),
            ):
                client.get(url + "?warmup")  # compile queries, import modules
                streaming_peak, csv_bytes, seconds = measure(
                    lambda url=url: sum(len(c) for c in client.get(url).streaming_content)
                )
                naive_peak, _, _ = measure(
                    lambda rows=rows: len(HttpResponse("".join(csv_lines(list(rows())))).content)
                )
                results[(name, size)] = streaming_peak
                print(
                    f"{size:>8} {name:<12} {streaming_peak / 1e6:>12.2f} MB "
                    f"{naive_peak / 1e6:>20.2f} MB {csv_bytes / 1e6:>7.1f} MB {seconds:>9.2f}"
                )
        if len(sizes) >= 2:
            small, large = sizes[0], sizes[-1]
            for name in ("grades", "predictions"):
                ratio = results[(name, large)] / results[(name, small)]
                print(
                    f"{name}: streaming peak at {large:,} rows / at {small:,} rows = {ratio:.2f} "
                    f"(rows x{large / small:.0f})"
                )
    finally:
        connection.creation.destroy_test_db(test_db, verbosity=0)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
