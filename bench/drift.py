"""What the drift report and the /metrics body cost at scale.

Fills a dedicated, migrated, empty database (``DATABASE_URL``) with ``--images`` images and one
active version's predictions (half on its training images, half on uploads of the current week),
then times ``drift_report()`` cold and with the training-set sample cached, and the ``/metrics``
body with and without the cached report.

    createdb funduscope_bench_drift
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/funduscope_bench_drift python manage.py migrate
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/funduscope_bench_drift python bench/drift.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grading.settings")


def fill(images: int) -> None:
    import numpy as np
    from django.utils import timezone

    from grading.models import Image, ModelVersion, Patient, Prediction

    if Image.objects.exists():
        raise SystemExit("The database is not empty: use a dedicated one.")
    rng = np.random.default_rng(0)
    patient = Patient.objects.create(pseudonym="BENCH-DRIFT")
    rows = [
        Image(
            patient=patient,
            file=f"images/{i}.jpg",
            sha256=hashlib.sha256(str(i).encode()).hexdigest(),
            width=512,
            height=512,
            quality_score=float(rng.random()),
        )
        for i in range(images)
    ]
    Image.objects.bulk_create(rows, batch_size=5000)
    ids = list(Image.objects.order_by("id").values_list("id", flat=True))
    training = set(ids[: images // 2])
    old = timezone.now() - dt.timedelta(weeks=30)
    Image.objects.filter(id__in=training).update(uploaded_at=old)
    version = ModelVersion.objects.create(
        name="bench", state="active", class_values=[0, 1, 2, 3, 4]
    )
    predictions = []
    for image_id in ids:
        p = rng.dirichlet(np.ones(5)).tolist()
        predictions.append(
            Prediction(
                image_id=image_id,
                model_version=version,
                probabilities=p,
                predicted_grade_id=int(np.argmax(p)),
                in_training=image_id in training,
                entropy=0.0,
            )
        )
    Prediction.objects.bulk_create(predictions, batch_size=5000)


def seconds(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    args = parser.parse_args()
    import django

    django.setup()
    from django.core.cache import cache

    from grading.selectors.drift import drift_report
    from grading.selectors.metrics import metrics_exposition

    fill(args.images)
    cache.clear()
    print(f"drift_report, cold: {seconds(drift_report):.2f} s")
    print(f"drift_report, training sample cached: {seconds(drift_report):.2f} s")
    cache.clear()
    print(f"/metrics body, nothing cached: {seconds(metrics_exposition):.2f} s")
    print(f"/metrics body, report cached: {seconds(metrics_exposition):.2f} s")


if __name__ == "__main__":
    main()
