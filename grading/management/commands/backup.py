"""``manage.py backup DEST``: database, photographs and model folders, with a manifest of
checksums (grading.services.backups)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from grading.services.backups import BackupError, backup_create


class Command(BaseCommand):
    help = "Write a consistent backup (database, photographs, model folders) into DEST."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dest", type=Path, help="A new or empty folder.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            summary = backup_create(dest=options["dest"])
        except BackupError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"Backup written to {summary.path}: {summary.files} files, "
            f"{summary.bytes / 1e6:.1f} MB, snapshot taken at {summary.started_at:%Y-%m-%d %H:%M:%S %Z}."
        )
