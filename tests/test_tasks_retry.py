"""Task wrapper logic run in-process (``Task.apply``): transient errors are retried with the job
put back to queued, permanent ones fail the job with the error, and a job that is not queued for
this task is left alone. (The same tasks on a real worker: test_tasks_worker.py.)"""

from __future__ import annotations

from unittest import mock

from django.db import OperationalError

from grading.models import Job
from grading.tasks import features_extract
from tests.base import BaseTestCase


class TaskRetryTests(BaseTestCase):
    def _job(self) -> Job:
        return Job.objects.create(kind=Job.Kind.FEATURES_EXTRACT, celery_task_id="task-1")

    def _run(self, job: Job):
        return features_extract.apply(args=[job.pk], task_id=job.celery_task_id)

    def test_a_transient_error_is_retried_and_the_job_then_succeeds(self):
        job = self._job()
        states_seen: list[str] = []

        def flaky(*, job, progress):
            states_seen.append(Job.objects.get(pk=job.pk).state)
            if len(states_seen) == 1:
                raise OperationalError("database is locked")
            progress(50, "half way")
            return {"message": "all done"}

        with mock.patch("grading.services.features.features_extract_job", side_effect=flaky):
            self._run(job)
        job.refresh_from_db()
        self.assertEqual(states_seen, [Job.State.RUNNING, Job.State.RUNNING])
        self.assertEqual(job.state, Job.State.SUCCEEDED)
        self.assertEqual((job.progress, job.message), (100, "all done"))

    def test_a_transient_error_that_persists_fails_the_job_after_the_retries(self):
        job = self._job()
        error = OperationalError("could not connect to server")
        with mock.patch("grading.services.features.features_extract_job", side_effect=error) as run:
            self._run(job)
        job.refresh_from_db()
        self.assertEqual(run.call_count, features_extract.max_retries + 1)
        self.assertEqual(job.state, Job.State.FAILED)
        self.assertIn("OperationalError: could not connect to server", job.error)

    def test_a_permanent_error_fails_at_once_with_its_message(self):
        job = self._job()
        error = ValueError("variants must be between 1 and 50, not 99")
        with mock.patch("grading.services.features.features_extract_job", side_effect=error) as run:
            self._run(job)
        job.refresh_from_db()
        self.assertEqual(run.call_count, 1)
        self.assertEqual(job.state, Job.State.FAILED)
        self.assertEqual(job.message, "ValueError: variants must be between 1 and 50, not 99")
        self.assertIn("Traceback", job.error)

    def test_a_job_not_queued_for_this_task_is_skipped(self):
        job = self._job()
        Job.objects.filter(pk=job.pk).update(state=Job.State.CANCELLED)
        with mock.patch("grading.services.features.features_extract_job") as run:
            result = self._run(job)
        self.assertEqual(result.get(), {"skipped": True})
        run.assert_not_called()
