from __future__ import annotations

import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from grading.services.scale_seed import SeedRefused, photos_dir_default, scale_seed


class Command(BaseCommand):
    help = (
        "Fill a fresh database with a synthetic installation for benchmarks and load tests: N images "
        "(source 'scale-test', pointing at a few real photographs), patients seen over several "
        "visits, 50 graders (scale-grader01..50), a reviewer and an admin (scale-reviewer, "
        "scale-admin; password from --password or FUNDUS_SCALE_PASSWORD), two model versions with "
        "a prediction for every image, adjudications and jobs."
    )

    def add_arguments(self, parser):
        parser.add_argument("--images", type=int, required=True, help="number of images (N)")
        parser.add_argument("--graders", type=int, default=50)
        parser.add_argument(
            "--password",
            default=os.environ.get("FUNDUS_SCALE_PASSWORD", ""),
            help="password of every scale-* account (default: FUNDUS_SCALE_PASSWORD)",
        )
        parser.add_argument(
            "--photos-dir",
            type=Path,
            default=None,
            help="folder of real photographs to point at (default: FUNDUS_DEMO_DIR; else "
            "synthetic pictures)",
        )
        parser.add_argument("--seed", type=int, default=2026)

    def handle(self, *args, **options):
        if options["images"] < 1:
            raise CommandError("--images must be at least 1.")
        if options["graders"] < 2:
            raise CommandError("--graders must be at least 2 (double grading needs two).")
        if len(options["password"]) < 8:
            raise CommandError(
                "Give the scale-* accounts a password of 8+ characters: --password or "
                "FUNDUS_SCALE_PASSWORD."
            )
        try:
            report = scale_seed(
                images=options["images"],
                graders=options["graders"],
                password=options["password"],
                photos_dir=options["photos_dir"] or photos_dir_default(),
                seed=options["seed"],
                progress=lambda message: self.stdout.write(f"  {message}"),
            )
        except SeedRefused as error:
            raise CommandError(str(error)) from None
        states = ", ".join(f"{n} {state}" for state, n in report.counts_by_state.items())
        self.stdout.write(
            self.style.SUCCESS(
                f"Seeded {report.images} images ({states}) of {report.patients} patients, "
                f"{report.grades} grades by {report.graders} graders, {report.predictions} "
                f"predictions, {report.jobs} jobs in {report.seconds:.1f} s."
            )
        )
