"""``manage.py restore SRC``: rebuild an empty installation from a backup, after checking every
checksum (grading.services.backups)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from grading.services.backups import BackupError, backup_restore


class Command(BaseCommand):
    help = "Restore a backup folder into this installation's empty database and folders."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("src", type=Path, help="A folder written by `manage.py backup`.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            manifest = backup_restore(src=options["src"])
        except BackupError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"Restored the backup taken at {manifest['started_at']} "
            f"({len(manifest['files'])} files). Run `manage.py migrate` if this release is newer."
        )
