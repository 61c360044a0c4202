from __future__ import annotations

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from grading.services.images import (
    ImportRejected,
    images_import,
    import_items_from_csv,
    import_items_from_folders,
    import_items_grouped,
    import_items_ungraded_from_folder,
)


class Command(BaseCommand):
    help = (
        "Import fundus photographs. Graded: DIR/<grade>/*.jpg, or --labels CSV (filename,grade"
        "[,patient_id,eye,date]) with file names relative to DIR; grades become confirmed grades "
        "from the named import source. Ungraded (--ungraded): every photograph under DIR, or "
        "--labels CSV (filename[,patient_id,eye,date]), stored as pending images for the "
        "clinicians' worklist. Safe to re-run: duplicates are skipped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path)
        parser.add_argument(
            "--labels",
            type=Path,
            help="CSV with at least filename,grade (with --ungraded: filename, and no grade column)",
        )
        parser.add_argument(
            "--ungraded",
            action="store_true",
            help="store the photographs as pending images (no grade) for the clinicians to grade",
        )
        parser.add_argument(
            "--source", help="name of the import source (default: import:<DIR name>)"
        )
        parser.add_argument(
            "--groups",
            type=Path,
            help="near-duplicate groups file (one group of file ids per line): each group is "
            "imported as one patient, so no training split separates its photographs",
        )
        parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")

    def handle(
        self,
        *args,
        directory: Path,
        labels: Path | None,
        ungraded: bool,
        source: str | None,
        groups: Path | None = None,
        **options,
    ):
        directory = directory.expanduser().resolve()
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a directory")
        if labels is not None and not labels.is_file():
            raise CommandError(f"{labels} does not exist")
        others = 0
        try:
            if labels:
                items = import_items_from_csv(labels, directory, ungraded=ungraded)
            elif ungraded:
                items, others = import_items_ungraded_from_folder(directory)
            else:
                items = import_items_from_folders(directory)
            if groups is not None:
                items = import_items_grouped(items, groups)
        except ImportRejected as error:
            raise CommandError(str(error)) from None
        source = source or f"import:{directory.name}"
        started = time.perf_counter()
        show_bar = not options["no_progress"] and len(items) > 50
        with tqdm(total=len(items), unit="img", disable=not show_bar) as bar:
            summary = images_import(items=items, source=source, progress=lambda _: bar.update(1))
        elapsed = time.perf_counter() - started

        for path, reason in summary.rejected:
            self.stderr.write(f"skipped {path}: {reason}")
        if ungraded:
            what = f"{summary.ungraded} pending, to grade in the worklist"
        else:
            what = ", ".join(f"grade {g}: {n}" for g, n in sorted(summary.per_grade.items()))
        self.stdout.write(
            f"Imported {summary.imported} image(s) from {directory} in {elapsed:.1f} s "
            f"({what or 'none'}); {summary.duplicates} duplicate(s) skipped; "
            f"{len(summary.rejected)} file(s) rejected."
            + (f" {others} file(s) not named like a photograph left alone." if others else "")
        )
        if ungraded and summary.imported_ids:
            self._predictions_queue(summary.imported_ids)

    def _predictions_queue(self, image_ids: list[int]) -> None:
        # The model's proposal (and the "most uncertain first" order) needs a prediction; uploads
        # queue one the same way. Never fatal: the images are stored whatever happens here.
        from grading.services.predictions import images_predict_enqueue

        if images_predict_enqueue(image_ids=image_ids):
            self.stdout.write("Prediction by the active model queued (see Jobs).")
        else:
            self.stdout.write(
                "No prediction queued (no active model, or the job queue is unavailable); "
                "the next prediction refresh will catch these images up."
            )
