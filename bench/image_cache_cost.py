"""The cost of ``Cache-Control: private, no-store`` on patient images (issue 20) to the grading
page: with ``private, max-age=3600`` a grader who comes back to an image (previous image, the
browser's back button, a second look) took the photograph from the browser's cache; now the
browser asks for it again on every visit. What that adds to one revisit of the grading page is
one request for the original photograph: its server time and its bytes.

Measured through Django's test client (the whole middleware stack, no network) on a throwaway
SQLite database, with a real full-size photograph from ``../shared/datasets/raw-fundus``:

    .venv/bin/python bench/image_cache_cost.py --runs 3 --repeat 20

Prints, per run, the median time of the grading page's HTML and of the photograph request, and
the photograph's size; writes ``bench/results/image_cache_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FUNDUS_SHARED_DIR", REPO.parent / "shared"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "image_cache_cost.json"
    )
    return parser.parse_args()


def _median_ms(client: Any, url: str, repeat: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        size = len(body)
    return statistics.median(times), size


def main() -> None:
    args = parse_args()
    photos = sorted((SHARED / "datasets" / "raw-fundus").glob("*.jpg"))
    if not photos:
        sys.exit(f"No photograph in {SHARED / 'datasets' / 'raw-fundus'} (set FUNDUS_SHARED_DIR).")
    os.environ.pop("DATABASE_URL", None)  # a throwaway SQLite database, never a shared one
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grading.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.urls import reverse

    setup_test_environment()
    settings.DEBUG = False
    settings.MEDIA_ROOT = tempfile.mkdtemp(prefix="funduscope-bench-media-")
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    from grading.models import Patient
    from grading.services.images import image_create, image_validate

    clinician = User.objects.create_user("bench-clinician", password="not-used-here-123")
    clinician.groups.add(Group.objects.get(name="clinician"))
    image = image_create(
        validated=image_validate(data=photos[0].read_bytes()),
        patient=Patient.objects.create(pseudonym="P-BENCH"),
    )
    client = Client()
    client.force_login(clinician)
    page_url = reverse("grade_image", args=[image.pk])
    photo_url = reverse("image_file", args=[image.pk])
    cache_control = client.get(photo_url)["Cache-Control"]
    client.get(page_url)  # warm up: templates, the claim
    runs = []
    for run in range(args.runs):
        page_ms, _ = _median_ms(client, page_url, args.repeat)
        photo_ms, photo_bytes = _median_ms(client, photo_url, args.repeat)
        runs.append({"page_ms": page_ms, "photo_ms": photo_ms, "photo_bytes": photo_bytes})
        print(
            f"run {run + 1}: grading page {page_ms:.1f} ms, photograph {photo_ms:.1f} ms "
            f"({photo_bytes / 1024:.0f} KiB) -> a revisit costs +{photo_ms:.1f} ms "
            f"(+{100 * photo_ms / page_ms:.0f}%) and {photo_bytes / 1024:.0f} KiB"
        )
    connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)
    result = {
        "cache_control": cache_control,
        "photograph": photos[0].name,
        "repeat": args.repeat,
        "runs": runs,
        "machine": platform.platform(),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"Cache-Control: {cache_control}; written {args.out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
