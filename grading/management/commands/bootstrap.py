from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.core.management.base import BaseCommand

from grading import storage
from grading.models import Image, Job, ModelVersion

DEMO_SOURCE = "import:demo"
CERTIFICATION_SET_SIZE = 100


class Command(BaseCommand):
    help = (
        "First start: create an admin account (password from FUNDUS_ADMIN_PASSWORD, else generated "
        "and printed once), import the demo dataset (FUNDUS_DEMO_DIR) if the database is empty, "
        "and queue the first model's training (activated automatically, as no model was ever "
        "active). Safe to run again: each step happens once."
    )

    def handle(self, *args, **options):
        if storage.bucket_ensure():
            self.stdout.write(f"Created the bucket {settings.FUNDUS_S3_BUCKET!r}.")
        self._admin_create()
        self._demo_import()
        self._certification_set_build()
        self._first_training_queue()

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
        call_command("import_images", *args, "--source", DEMO_SOURCE, stdout=self.stdout)

    def _certification_set_build(self) -> None:
        """The demo import is all confirmed, so a new clinician's queue would be empty: a stratified
        100 of it becomes the certification set they grade first (and the gold set they pass)."""
        from grading.models import CertificationItem
        from grading.services.certification import CertificationSetError, certification_set_build

        if CertificationItem.objects.exists():
            return
        if not Image.objects.filter(source=DEMO_SOURCE).exists():
            return
        try:
            added = certification_set_build(size=CERTIFICATION_SET_SIZE, source=DEMO_SOURCE)
        except CertificationSetError as error:
            self.stdout.write(f"No certification set: {error}")
            return
        self.stdout.write(
            f"Certification set: {len(added)} demo images, stratified by grade; new clinicians "
            "grade them first (/certification/)."
        )

    def _first_training_queue(self) -> None:
        """A fresh installation with graded images gets a model without anyone clicking: the
        first training is queued here and, as no version was ever active, activated when it
        succeeds. Later retrains (manual or automatic) stay candidates."""
        from grading.services.jobs import QueueUnavailable
        from grading.services.model_versions import TrainingDataError, model_retrain_request

        if ModelVersion.objects.exists() or Job.objects.filter(kind=Job.Kind.MODEL_TRAIN).exists():
            return
        if not Image.objects.filter(grading_state=Image.GradingState.CONFIRMED).exists():
            return
        try:
            job, _created = model_retrain_request(
                user=None, trigger="setup", activate_if_first=True
            )
        except TrainingDataError as error:
            self.stdout.write(f"No first model yet: {error}")
        except QueueUnavailable as error:
            self.stdout.write(
                self.style.WARNING(
                    f"The first model's training was not queued: {error} "
                    "Run `manage.py bootstrap` again once Redis runs (bin/run-dev does)."
                )
            )
        else:
            self.stdout.write(
                f"Queued the training of the first model (job #{job.pk}); the workers start it, "
                "and it is activated automatically when it succeeds. Progress: /jobs/."
            )
