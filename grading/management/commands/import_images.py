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
)


class Command(BaseCommand):
    help = (
        "Import graded fundus photographs: DIR/<grade>/*.jpg, or --labels CSV (filename,grade"
        "[,patient_id,eye,date]) with file names relative to DIR. Grades become confirmed grades "
        "from the named import source. Safe to re-run: duplicates are skipped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path)
        parser.add_argument("--labels", type=Path, help="CSV with at least filename,grade")
        parser.add_argument(
            "--source", help="name of the import source (default: import:<DIR name>)"
        )
        parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")

    def handle(self, *args, directory: Path, labels: Path | None, source: str | None, **options):
        directory = directory.expanduser().resolve()
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a directory")
        if labels is not None and not labels.is_file():
            raise CommandError(f"{labels} does not exist")
        try:
            items = (
                import_items_from_csv(labels, directory)
                if labels
                else import_items_from_folders(directory)
            )
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
        per_grade = ", ".join(f"grade {g}: {n}" for g, n in sorted(summary.per_grade.items()))
        self.stdout.write(
            f"Imported {summary.imported} image(s) from {directory} in {elapsed:.1f} s "
            f"({per_grade or 'none'}); {summary.duplicates} duplicate(s) skipped; "
            f"{len(summary.rejected)} file(s) rejected."
        )
