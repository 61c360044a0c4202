"""Job services against a real Redis (test database 15): enqueue, claim, progress, cancel, retry,
stale detection, and the clear error when Redis is down."""

from __future__ import annotations

import datetime as dt
import threading
from unittest import mock

from django.db import connection
from django.test import TransactionTestCase, override_settings
from django.utils import timezone

from grading.models import Job, ModelVersion
from grading.services import jobs as job_services
from grading.services.predictions import images_predict_enqueue
from tests.base import BaseTestCase
from tests.factories import image_make
from tests.factories_jobs import (
    DEAD_BROKER_URL,
    BrokerMixin,
    model_version_make,
    queue_length,
    queued_task_names,
    redis_flush,
    use_broker,
)


class JobEnqueueTests(BrokerMixin, BaseTestCase):
    def setUp(self):
        redis_flush()

    def test_it_queues_a_job_and_sends_its_task_to_the_ml_queue_on_commit(self):
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            job, created = job_services.job_enqueue(
                kind=Job.Kind.MODEL_TRAIN, params={"trigger": "manual"}, created_by=self.adam
            )
        self.assertTrue(created)
        self.assertEqual(job.state, Job.State.QUEUED)
        self.assertEqual(job.created_by, self.adam)
        self.assertTrue(job.celery_task_id)
        self.assertEqual(queue_length("ml"), 0, "nothing may be sent before the commit")
        for callback in callbacks:
            callback()
        self.assertEqual(queued_task_names("ml"), ["grading.tasks.model_train"])

    def test_it_returns_the_open_job_instead_of_queueing_a_second_one(self):
        with self.captureOnCommitCallbacks(execute=True):
            first, created_first = job_services.job_enqueue(kind=Job.Kind.MODEL_TRAIN)
            second, created_second = job_services.job_enqueue(kind=Job.Kind.MODEL_TRAIN)
        self.assertTrue(created_first)
        self.assertFalse(created_second)
        self.assertEqual(first.pk, second.pk)
        self.assertEqual(Job.objects.filter(kind=Job.Kind.MODEL_TRAIN).count(), 1)
        self.assertEqual(queue_length("ml"), 1)

    def test_it_returns_the_winner_when_it_loses_the_insert_race(self):
        # The other request inserted its job after our check for an open one: the database's
        # partial unique constraint refuses our row and we hand back the winner's job.
        winner = Job.objects.create(kind=Job.Kind.MODEL_TRAIN, celery_task_id="winner")
        with mock.patch.object(job_services, "job_open_for_kind", side_effect=[None, winner]):
            job, created = job_services.job_enqueue(kind=Job.Kind.MODEL_TRAIN)
        self.assertFalse(created)
        self.assertEqual(job.pk, winner.pk)
        self.assertEqual(Job.objects.count(), 1)

    def test_it_allows_several_open_prediction_jobs_for_uploads(self):
        with self.captureOnCommitCallbacks(execute=True):
            job_services.job_enqueue(kind=Job.Kind.IMAGES_PREDICT, params={"image_ids": [1]})
            job_services.job_enqueue(kind=Job.Kind.IMAGES_PREDICT, params={"image_ids": [2]})
        self.assertEqual(Job.objects.filter(kind=Job.Kind.IMAGES_PREDICT).count(), 2)

    def test_it_refuses_an_unknown_kind(self):
        with self.assertRaisesMessage(ValueError, "unknown job kind 'nonsense'"):
            job_services.job_enqueue(kind="nonsense")

    def test_it_raises_queue_unavailable_and_writes_nothing_when_redis_is_down(self):
        with (
            use_broker(DEAD_BROKER_URL),
            self.assertRaises(job_services.QueueUnavailable) as raised,
        ):
            job_services.job_enqueue(kind=Job.Kind.MODEL_TRAIN, created_by=self.adam)
        self.assertIn("job queue is unavailable", str(raised.exception))
        self.assertIn("127.0.0.1:6390", str(raised.exception))
        self.assertFalse(Job.objects.exists())

    def test_it_marks_the_job_failed_when_the_send_fails_after_the_commit(self):
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            job, _ = job_services.job_enqueue(kind=Job.Kind.FEATURES_EXTRACT)
        with use_broker(DEAD_BROKER_URL):
            for callback in callbacks:
                callback()  # deferred (inside the test's transaction): recorded, not raised
        job.refresh_from_db()
        self.assertEqual(job.state, Job.State.FAILED)
        self.assertIn("job queue is unavailable", job.error)


class JobCancelRetryTests(BrokerMixin, BaseTestCase):
    def test_it_cancels_a_queued_job(self):
        job = Job.objects.create(kind=Job.Kind.MODEL_TRAIN, celery_task_id="t-1")
        job_services.job_cancel(job=job)
        job.refresh_from_db()
        self.assertEqual(job.state, Job.State.CANCELLED)
        self.assertIsNotNone(job.finished_at)
        # The worker that receives the task later finds nothing to claim.
        self.assertIsNone(job_services.job_claim(job_id=job.pk, task_id="t-1", worker="w"))

    def test_it_refuses_to_cancel_a_running_job(self):
        job = Job.objects.create(kind=Job.Kind.MODEL_TRAIN, state=Job.State.RUNNING)
        with self.assertRaisesMessage(job_services.JobStateError, "Only queued jobs"):
            job_services.job_cancel(job=job)
        job.refresh_from_db()
        self.assertEqual(job.state, Job.State.RUNNING)

    def test_it_retries_a_failed_job_as_a_new_job_with_the_same_parameters(self):
        failed = Job.objects.create(
            kind=Job.Kind.FEATURES_EXTRACT, state=Job.State.FAILED, params={"x": 1}, error="boom"
        )
        with self.captureOnCommitCallbacks(execute=True):
            again = job_services.job_retry(job=failed, user=self.adam)
        self.assertNotEqual(again.pk, failed.pk)
        self.assertEqual(again.state, Job.State.QUEUED)
        self.assertEqual(again.params, {"x": 1, "retry_of": failed.pk})
        failed.refresh_from_db()
        self.assertEqual(failed.error, "boom", "the failure stays in the history")

    def test_it_refuses_to_retry_a_job_that_succeeded(self):
        done = Job.objects.create(kind=Job.Kind.MODEL_TRAIN, state=Job.State.SUCCEEDED)
        with self.assertRaises(job_services.JobStateError):
            job_services.job_retry(job=done)


class JobClaimProgressTests(BaseTestCase):
    def test_it_claims_a_queued_job_once_and_only_for_its_own_task(self):
        job = Job.objects.create(kind=Job.Kind.MODEL_TRAIN, celery_task_id="task-a")
        self.assertIsNone(job_services.job_claim(job_id=job.pk, task_id="task-b", worker="w"))
        claimed = job_services.job_claim(job_id=job.pk, task_id="task-a", worker="ml@host")
        self.assertEqual(claimed.state, Job.State.RUNNING)
        self.assertEqual(claimed.worker, "ml@host")
        self.assertIsNotNone(claimed.started_at)
        self.assertIsNone(job_services.job_claim(job_id=job.pk, task_id="task-a", worker="w"))

    def test_progress_is_written_monotonic_and_clamped(self):
        job = Job.objects.create(kind=Job.Kind.MODEL_TRAIN, state=Job.State.RUNNING)
        report = job_services.JobReporter(job.pk, min_interval=0)
        report(30, "Features")
        report(20, "a lower value never moves the bar back")
        job.refresh_from_db()
        self.assertEqual(
            (job.progress, job.message), (30, "a lower value never moves the bar back")
        )
        report(250, "Done")
        job.refresh_from_db()
        self.assertEqual(job.progress, 100)

    def test_a_span_maps_a_step_onto_its_part_of_the_bar(self):
        job = Job.objects.create(kind=Job.Kind.MODEL_TRAIN, state=Job.State.RUNNING)
        report = job_services.JobReporter(job.pk, min_interval=0)
        report.span(40, 90)(50, "half of the second step")
        job.refresh_from_db()
        self.assertEqual(job.progress, 65)

    def test_a_job_no_longer_running_stops_its_worker(self):
        job = Job.objects.create(kind=Job.Kind.MODEL_TRAIN, state=Job.State.FAILED)
        with self.assertRaises(job_services.JobAbandoned):
            job_services.JobReporter(job.pk)(10, "still working?")

    def test_the_soft_time_limit_is_enforced_at_the_next_progress_report(self):
        from celery.exceptions import SoftTimeLimitExceeded

        job = Job.objects.create(kind=Job.Kind.MODEL_TRAIN, state=Job.State.RUNNING)
        with self.assertRaises(SoftTimeLimitExceeded):
            job_services.JobReporter(job.pk, deadline=0.0)(10, "too late")

    def test_failure_keeps_the_error_and_fails_the_half_trained_version(self):
        version = model_version_make("v9", state=ModelVersion.State.TRAINING)
        job = Job.objects.create(
            kind=Job.Kind.MODEL_TRAIN, state=Job.State.RUNNING, model_version=version
        )
        self.assertTrue(job_services.job_fail(job_id=job.pk, error="ValueError: bad"))
        job.refresh_from_db()
        version.refresh_from_db()
        self.assertEqual((job.state, job.error), (Job.State.FAILED, "ValueError: bad"))
        self.assertEqual(version.state, ModelVersion.State.FAILED)
        self.assertFalse(job_services.job_fail(job_id=job.pk, error="again"), "no double failure")


@override_settings(FUNDUS_JOB_STALE_SECONDS=60)
class JobsMarkStaleTests(BaseTestCase):
    def _running(self, *, worker: str, heartbeat_age: float, kind: str = Job.Kind.MODEL_TRAIN):
        now = timezone.now()
        return Job.objects.create(
            kind=kind,
            state=Job.State.RUNNING,
            worker=worker,
            started_at=now - dt.timedelta(seconds=heartbeat_age + 5),
            heartbeat_at=now - dt.timedelta(seconds=heartbeat_age),
        )

    def test_it_fails_running_jobs_whose_heartbeat_is_too_old(self):
        stale = self._running(worker="ml@a", heartbeat_age=300)
        alive = self._running(worker="default@a", heartbeat_age=5, kind=Job.Kind.FEATURES_EXTRACT)
        self.assertEqual(job_services.jobs_mark_stale(), 1)
        stale.refresh_from_db()
        alive.refresh_from_db()
        self.assertEqual(stale.state, Job.State.FAILED)
        self.assertIn("stopped reporting", stale.error)
        self.assertEqual(alive.state, Job.State.RUNNING)

    def test_it_fails_the_running_jobs_of_a_worker_that_restarted(self):
        job = self._running(worker="ml@host", heartbeat_age=1)
        other = self._running(worker="ml@other", heartbeat_age=1, kind=Job.Kind.FEATURES_EXTRACT)
        self.assertEqual(job_services.jobs_mark_stale(restarted_worker="ml@host"), 1)
        job.refresh_from_db()
        other.refresh_from_db()
        self.assertEqual(job.state, Job.State.FAILED)
        self.assertIn("restarted", job.error)
        self.assertEqual(other.state, Job.State.RUNNING)

    def test_a_stale_job_can_be_retried(self):
        job = self._running(worker="ml@gone", heartbeat_age=600)
        job_services.jobs_mark_stale()
        job.refresh_from_db()
        # Retrying needs the queue: with Redis down it says so instead of half-working.
        with use_broker(DEAD_BROKER_URL), self.assertRaises(job_services.QueueUnavailable):
            job_services.job_retry(job=job)
        self.assertEqual(Job.objects.filter(state=Job.State.QUEUED).count(), 0)


class ImagesPredictEnqueueTests(BrokerMixin, BaseTestCase):
    def setUp(self):
        redis_flush()
        self.image = image_make()

    def test_it_returns_false_without_an_active_version(self):
        self.assertFalse(images_predict_enqueue(image_ids=[self.image.pk]))
        self.assertFalse(Job.objects.exists())

    def test_it_queues_a_prediction_with_the_active_version(self):
        version = model_version_make("v1", state=ModelVersion.State.ACTIVE)
        with self.captureOnCommitCallbacks(execute=True):
            self.assertTrue(images_predict_enqueue(image_ids=[self.image.pk, self.image.pk]))
        job = Job.objects.get()
        self.assertEqual(job.kind, Job.Kind.IMAGES_PREDICT)
        self.assertEqual(job.params, {"image_ids": [self.image.pk], "model_version_id": version.pk})
        self.assertEqual(queued_task_names("ml"), ["grading.tasks.images_predict"])

    def test_it_returns_false_and_never_raises_when_redis_is_down(self):
        model_version_make("v1", state=ModelVersion.State.ACTIVE)
        with use_broker(DEAD_BROKER_URL):
            self.assertFalse(images_predict_enqueue(image_ids=[self.image.pk]))
        self.assertFalse(Job.objects.exists())


class ConcurrentRetrainRequestTests(BrokerMixin, TransactionTestCase):
    """Two (here: four) retrain requests at the same moment, each on its own connection."""

    serialized_rollback = True  # keep the roles and grade scale written by data migrations

    def test_concurrent_requests_make_one_job(self):
        redis_flush()
        start = threading.Barrier(4)
        results: list[tuple[int, bool]] = []
        errors: list[BaseException] = []

        def request() -> None:
            try:
                start.wait(timeout=10)
                job, created = job_services.job_enqueue(kind=Job.Kind.MODEL_TRAIN)
                results.append((job.pk, created))
            except BaseException as error:  # reported below, in the test thread
                errors.append(error)
            finally:
                connection.close()

        threads = [threading.Thread(target=request) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        self.assertEqual(errors, [])
        self.assertEqual(Job.objects.filter(kind=Job.Kind.MODEL_TRAIN).count(), 1)
        self.assertEqual(len({job_id for job_id, _ in results}), 1, results)
        self.assertEqual(sum(created for _, created in results), 1, results)
        self.assertEqual(queue_length("ml"), 1, "one task sent")
