"""A worker killed (SIGKILL) in the middle of a retrain: the job is detected as failed, the active
model is untouched, and the job can be run again to success.

The worker is a real `celery worker` subprocess (solo pool, like `make run`'s ML worker) on the
test database and the test Redis database.
"""

from __future__ import annotations

import datetime as dt
import signal
import uuid

import pytest
from django.test import TransactionTestCase, override_settings
from django.utils import timezone

from grading.models import Job, ModelVersion
from grading.services import jobs as job_services
from grading.services import model_versions as version_services
from grading.tasks import jobs_housekeeping
from tests.factories import user_make
from tests.factories_jobs import (
    FINISHED,
    BrokerMixin,
    TrainingMixin,
    confirmed_images_make,
    job_wait,
    model_version_make,
    subprocess_worker,
    wait_until,
    worker_log,
)

STALE_SECONDS = 4


@pytest.mark.slow
@override_settings(FUNDUS_JOB_HEARTBEAT_SECONDS=1, FUNDUS_JOB_STALE_SECONDS=STALE_SECONDS)
class KilledWorkerTests(TrainingMixin, BrokerMixin, TransactionTestCase):
    tmp_prefix = "funduscope-killed-"
    train_epochs = 4
    embedded_worker = False  # each test starts (and kills) its own worker process

    def test_a_worker_killed_mid_training_is_detected_and_the_job_can_run_again(self):
        adam = user_make("adam", "admin")
        confirmed_images_make()
        active_dir = self._tmp / "models" / "v1"
        active = model_version_make("v1", state=ModelVersion.State.ACTIVE, artifact_dir=active_dir)
        ModelVersion.objects.filter(pk=active.pk).update(activated_at=timezone.now())
        active.refresh_from_db()
        active_files = {p.name: p.read_bytes() for p in active_dir.iterdir()}
        name = f"killtest-{uuid.uuid4().hex[:6]}@%h"

        job, _ = version_services.model_retrain_request(user=adam)
        with subprocess_worker(name=name) as worker:
            job_wait(
                job,
                states=(Job.State.RUNNING, *FINISHED),
                timeout=120,
                on_poll=lambda _: self.assertIsNone(worker.poll(), worker_log(worker)),
            )
            self.assertEqual(job.state, Job.State.RUNNING, job.error)
            wait_until(
                lambda: Job.objects.get(pk=job.pk).progress >= 1, timeout=60, what="progress"
            )
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)

        job.refresh_from_db()
        self.assertEqual(job.state, Job.State.RUNNING, "nobody has noticed yet")
        self.assertNotIn("@%h", job.worker)
        half_made = job.model_version
        # The heartbeat has stopped: after the stale delay the periodic check (beat's task)
        # fails the job.
        later = timezone.now() + dt.timedelta(seconds=STALE_SECONDS + 1)
        self.assertEqual(jobs_housekeeping(now=later)["stale_marked"], 1)
        job.refresh_from_db()
        self.assertEqual(job.state, Job.State.FAILED)
        self.assertIn("stopped reporting", job.error)
        if half_made is not None:
            half_made.refresh_from_db()
            self.assertEqual(half_made.state, ModelVersion.State.FAILED)

        # The active model is untouched: still the only active one, same files.
        active.refresh_from_db()
        self.assertEqual(active.state, ModelVersion.State.ACTIVE)
        self.assertEqual(ModelVersion.objects.filter(state=ModelVersion.State.ACTIVE).count(), 1)
        self.assertEqual({p.name: p.read_bytes() for p in active_dir.iterdir()}, active_files)

        # Re-runnable: the retry succeeds on a fresh worker and yields a candidate.
        again = job_services.job_retry(job=job, user=adam)
        with subprocess_worker(name=name) as worker:
            job_wait(again, states=FINISHED, timeout=240)
            self.assertEqual(again.state, Job.State.SUCCEEDED, again.error + worker_log(worker))
        candidate = ModelVersion.objects.get(pk=again.result["model_version_id"])
        self.assertEqual(candidate.state, ModelVersion.State.CANDIDATE)
        active.refresh_from_db()
        self.assertEqual(active.state, ModelVersion.State.ACTIVE)

    def test_a_restarted_worker_fails_the_jobs_it_was_running(self):
        # The job a previous process of this worker was running when it died.
        job = Job.objects.create(
            kind=Job.Kind.FEATURES_EXTRACT,
            state=Job.State.RUNNING,
            worker="restarttest@localhost-test",
            started_at=timezone.now(),
            heartbeat_at=timezone.now(),
        )
        with subprocess_worker(name="restarttest@localhost-test") as worker:
            wait_until(
                lambda: (
                    Job.objects.get(pk=job.pk).state == Job.State.FAILED
                    or worker.poll() is not None
                ),
                timeout=90,
                what="the restarted worker to fail its old job",
            )
        job.refresh_from_db()
        self.assertEqual(job.state, Job.State.FAILED, worker_log(worker))
        self.assertIn("restarted while this job was running", job.error)
