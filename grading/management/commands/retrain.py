"""``manage.py retrain [--mode head|finetune] [--wait]``: queue a retrain as the Models page's
button does (a candidate version; nothing is activated), for admins who script it."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from grading.models import Job
from grading.services.jobs import QueueUnavailable
from grading.services.model_versions import TRAINING_MODES, model_retrain_request
from grading.services.training_set import TrainingDataError


class Command(BaseCommand):
    help = (
        "Queue a retrain (a new candidate version) as the Retrain button does. With --wait, "
        "show its progress and exit non-zero if it fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--mode", choices=sorted(TRAINING_MODES), default="head")
        parser.add_argument(
            "--wait", action="store_true", help="Wait for the job, showing its progress."
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=0,
            help="With --wait: give up (exit 1) after this many seconds (0: never).",
        )
        parser.add_argument(
            "--poll", type=float, default=1.0, help="With --wait: seconds between checks."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            job, created = model_retrain_request(user=None, mode=options["mode"], trigger="command")
        except (QueueUnavailable, TrainingDataError) as error:
            raise CommandError(str(error)) from error
        if created:
            self.stdout.write(f"Retrain queued: job #{job.pk} ({options['mode']}).")
        else:
            self.stdout.write(
                f"A retrain is already {job.get_state_display().lower()}: job #{job.pk}; "
                "no second one was started."
            )
        if options["wait"]:
            self._wait(job, timeout=options["timeout"], poll=max(0.1, options["poll"]))

    def _wait(self, job: Job, *, timeout: float, poll: float) -> None:
        started = time.monotonic()
        shown = None
        while True:
            job.refresh_from_db()
            line = f"[{job.get_state_display()}] {job.progress:3d} % {job.message}"
            if line != shown:
                self.stdout.write(line)
                self.stdout.flush()
                shown = line
            if job.state == Job.State.SUCCEEDED:
                self.stdout.write(f"Job #{job.pk} succeeded: {job.result.get('message', '')}")
                return
            if job.state in (Job.State.FAILED, Job.State.CANCELLED):
                raise CommandError(
                    f"Job #{job.pk} {job.get_state_display().lower()}: "
                    f"{job.error.splitlines()[0] if job.error else job.message}"
                )
            if timeout and time.monotonic() - started > timeout:
                raise CommandError(f"Job #{job.pk} still {job.state} after {timeout:.0f} s")
            time.sleep(poll)
