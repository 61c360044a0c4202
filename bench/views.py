"""Time to show a viewer view of a raw camera photograph (issue 13, item 7): rendered when the
clinician clicks (the old behaviour: no view existed before the first request) against served
from the cache the background rendering fills at upload. Both are measured in this run, on the
same photographs, through the Django view a browser calls (test client, logged in).

    .venv/bin/python bench/views.py [--photos 4] [--out bench/results/views.json]

Scratch SQLite database and media folder under /tmp; the shared raw photographs
(../shared/datasets/raw-fundus) are stored as new pending images.
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

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FUNDUS_SHARED_DIR", REPO.parent / "shared"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "views.json")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="funduscope-views-bench-"))
    os.environ["DATABASE_URL"] = f"sqlite:///{scratch / 'db.sqlite3'}"
    os.environ["MEDIA_ROOT"] = str(scratch / "media")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grading.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    from grading.models import Patient
    from grading.services.images import image_create, image_validate
    from grading.services.renderings import VIEW_MODES, image_views_render

    call_command("migrate", verbosity=0)
    photos = sorted((SHARED / "datasets" / "raw-fundus").glob("*.jpg"))[: args.photos]
    if not photos:
        print("no raw photographs found under", SHARED / "datasets" / "raw-fundus")
        return 1
    user = User.objects.create_user("bench", password="bench-pass-123")
    user.groups.add(Group.objects.get(name="clinician"))
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    patient = Patient.objects.create(pseudonym="BENCH")
    images = [
        image_create(validated=image_validate(data=p.read_bytes()), patient=patient) for p in photos
    ]
    modes = [mode for mode in VIEW_MODES if mode != "thumb"]

    def fetch(image, mode) -> float:
        started = time.perf_counter()
        response = client.get(reverse("image_view", args=[image.pk, mode]))
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert response.status_code == 200 and body, (response.status_code, mode)
        return time.perf_counter() - started

    on_click = [fetch(image, mode) for image in images for mode in modes]  # nothing cached yet
    for image in images:  # what the background task does after upload (cache cleared first)
        for mode in VIEW_MODES:
            (Path(os.environ["MEDIA_ROOT"]) / "views" / mode / f"{image.sha256}.png").unlink(
                missing_ok=True
            )
    background = []
    for image in images:
        started = time.perf_counter()
        image_views_render(image=image)
        background.append(time.perf_counter() - started)
    cached = [fetch(image, mode) for image in images for mode in modes]
    result = {
        "photos": [p.name for p in photos],
        "sizes": [f"{i.width}x{i.height}" for i in images],
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "machine": platform.platform(),
        "view_on_click_seconds_median": round(statistics.median(on_click), 3),
        "view_on_click_seconds_max": round(max(on_click), 3),
        "view_cached_seconds_median": round(statistics.median(cached), 4),
        "background_render_all_views_seconds_median": round(statistics.median(background), 3),
        "cached_over_on_click": round(statistics.median(cached) / statistics.median(on_click), 4),
    }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
