"""``manage.py retrain``: queues the same job as the Retrain button; ``--wait`` follows it and
exits non-zero when it fails. (The multi-machine test runs it to success on real workers.)"""

from __future__ import annotations

import io
import threading

from django.core.management import CommandError, call_command
from django.db import connection
from django.test import TransactionTestCase

from grading.models import Job
from grading.services import jobs as job_services
from tests.base import BaseTestCase
from tests.factories_jobs import BrokerMixin, confirmed_images_make


class RetrainCommandTests(BrokerMixin, BaseTestCase):
    def test_it_queues_a_candidate_retrain_like_the_button(self):
        confirmed_images_make()
        out = io.StringIO()
        call_command("retrain", "--mode", "head", stdout=out)
        job = Job.objects.get(kind=Job.Kind.MODEL_TRAIN)
        self.assertEqual(job.state, Job.State.QUEUED)
        self.assertEqual((job.params["mode"], job.params["trigger"]), ("head", "command"))
        self.assertNotIn("activate_if_first", job.params)
        self.assertIn(f"Retrain queued: job #{job.pk} (head).", out.getvalue())
        # A second call reports the open job instead of starting another.
        again = io.StringIO()
        call_command("retrain", stdout=again)
        self.assertEqual(Job.objects.filter(kind=Job.Kind.MODEL_TRAIN).count(), 1)
        self.assertIn(f"already queued: job #{job.pk}", again.getvalue())

    def test_too_few_confirmed_grades_is_a_clear_error(self):
        with self.assertRaisesMessage(CommandError, "Not enough confirmed grades to train a model"):
            call_command("retrain", stdout=io.StringIO())

    def test_an_unknown_mode_is_refused(self):
        with self.assertRaises(CommandError):
            call_command("retrain", "--mode", "everything", stdout=io.StringIO())


class RetrainWaitTests(BrokerMixin, TransactionTestCase):
    serialized_rollback = True  # keep the roles and grade scale written by data migrations

    def test_waiting_on_a_job_that_fails_exits_non_zero_with_its_error(self):
        confirmed_images_make()
        job, _ = job_services.job_enqueue(kind=Job.Kind.MODEL_TRAIN, params={"mode": "head"})

        def worker_fails_it() -> None:  # what a worker's on_failure does, from another thread
            job_services.job_fail(job_id=job.pk, error="ValueError: no weights\n\ntraceback")
            connection.close()

        timer = threading.Timer(0.5, worker_fails_it)
        timer.start()
        out = io.StringIO()
        try:
            with self.assertRaisesMessage(
                CommandError, f"Job #{job.pk} failed: ValueError: no weights"
            ):
                call_command("retrain", "--wait", "--poll", "0.1", "--timeout", "60", stdout=out)
        finally:
            timer.join()
        self.assertIn(f"already queued: job #{job.pk}", out.getvalue())
        self.assertIn("[Queued]", out.getvalue())
