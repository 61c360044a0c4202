from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.core.management.base import BaseCommand

from grading.models import Image


class Command(BaseCommand):
    help = (
        "First start: create an admin account (password from FUNDUS_ADMIN_PASSWORD, else generated "
        "and printed once) and import the demo dataset (FUNDUS_DEMO_DIR) if the database is empty."
    )

    def handle(self, *args, **options):
        self._admin_create()
        self._demo_import()

    def _admin_create(self) -> None:
        if User.objects.filter(is_superuser=True).exists():
            return
        username = os.environ.get("FUNDUS_ADMIN_USER", "admin")
        password = os.environ.get("FUNDUS_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=username, email="", password=password)
        user.groups.add(Group.objects.get(name="admin"))
        if "FUNDUS_ADMIN_PASSWORD" in os.environ:
            self.stdout.write(
                f"Created admin account {username!r} (password from FUNDUS_ADMIN_PASSWORD)."
            )
        else:
            self.stdout.write(
                self.style.WARNING(
                    f"Created admin account {username!r} with password {password!r}. "
                    "It is shown only this once: change it after logging in."
                )
            )

    def _demo_import(self) -> None:
        if Image.objects.exists():
            return
        demo = settings.FUNDUS_DEMO_DIR
        if not demo:
            self.stdout.write("No demo dataset configured (FUNDUS_DEMO_DIR); starting empty.")
            return
        demo_dir = Path(demo)
        if not demo_dir.is_dir():
            self.stdout.write(
                self.style.WARNING(f"FUNDUS_DEMO_DIR={demo} is not a folder; skipped.")
            )
            return
        labels = demo_dir / "labels.csv"
        self.stdout.write(f"Importing the demo dataset from {demo_dir} ...")
        args = ["--labels", str(labels), str(demo_dir)] if labels.exists() else [str(demo_dir)]
        call_command("import_images", *args, "--source", "import:demo", stdout=self.stdout)
