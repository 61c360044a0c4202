"""The jobs page: list with progress bars, the polled row partial, cancel, retry, and Redis down."""

from __future__ import annotations

from django.urls import reverse
from django.utils import timezone

from grading.models import Job
from tests.base import BaseTestCase
from tests.factories import image_make
from tests.factories_jobs import DEAD_BROKER_URL, BrokerMixin, redis_flush, use_broker


class JobsPageTests(BrokerMixin, BaseTestCase):
    def setUp(self):
        redis_flush()
        self.login(self.adam)

    def test_only_admins_see_the_jobs_page(self):
        self.login(self.alice)
        self.assertEqual(self.client.get(reverse("jobs")).status_code, 403)
        self.login(self.adam)
        self.assertEqual(self.client.get(reverse("jobs")).status_code, 200)

    def test_an_open_job_has_a_progress_bar_that_polls_and_a_finished_one_stops(self):
        running = Job.objects.create(
            kind=Job.Kind.MODEL_TRAIN,
            state=Job.State.RUNNING,
            progress=42,
            message="Training the head: epoch 3",
            started_at=timezone.now(),
        )
        page = self.client.get(reverse("jobs"))
        self.assertContains(page, 'value="42"')
        self.assertContains(page, "Training the head: epoch 3")
        self.assertContains(page, f'hx-get="{reverse("job_progress", args=[running.pk])}"')
        Job.objects.filter(pk=running.pk).update(
            state=Job.State.SUCCEEDED, progress=100, finished_at=timezone.now()
        )
        row = self.client.get(reverse("job_progress", args=[running.pk]))
        self.assertEqual(row.status_code, 200)
        self.assertContains(row, 'value="100"')
        self.assertNotContains(row, "hx-trigger", msg_prefix="a finished job stops polling")
        self.assertNotIn("HX-Refresh", row.headers)
        polled = self.client.get(reverse("job_progress", args=[running.pk]), HTTP_HX_REQUEST="true")
        self.assertEqual(polled["HX-Refresh"], "true", "the page reloads once when a job ends")

    def test_a_failed_job_shows_its_error_and_a_retry_button(self):
        failed = Job.objects.create(
            kind=Job.Kind.FEATURES_EXTRACT,
            state=Job.State.FAILED,
            message="MissingWeightsError: no weights for mobilenet_v2",
            error="MissingWeightsError: no weights for mobilenet_v2\n\nTraceback ...",
        )
        page = self.client.get(reverse("jobs"))
        self.assertContains(page, "MissingWeightsError: no weights for mobilenet_v2")
        self.assertContains(page, reverse("job_retry", args=[failed.pk]))
        detail = self.client.get(reverse("job_detail", args=[failed.pk]))
        self.assertContains(detail, "Traceback ...")

    def test_cancel_stops_a_queued_job(self):
        job = Job.objects.create(kind=Job.Kind.MODEL_TRAIN)
        response = self.client.post(reverse("job_cancel", args=[job.pk]), follow=True)
        self.assertContains(response, f"Job #{job.pk} cancelled.")
        job.refresh_from_db()
        self.assertEqual(job.state, Job.State.CANCELLED)

    def test_cancel_of_a_running_job_is_refused_with_a_message(self):
        job = Job.objects.create(kind=Job.Kind.MODEL_TRAIN, state=Job.State.RUNNING)
        response = self.client.post(reverse("job_cancel", args=[job.pk]), follow=True)
        self.assertContains(response, "Only queued jobs can be cancelled")

    def test_retry_queues_a_new_job(self):
        job = Job.objects.create(kind=Job.Kind.FEATURES_EXTRACT, state=Job.State.FAILED)
        response = self.client.post(reverse("job_retry", args=[job.pk]), follow=True)
        self.assertContains(response, "queued again as job")
        self.assertEqual(Job.objects.filter(state=Job.State.QUEUED).count(), 1)

    def test_an_admin_can_start_feature_extraction_but_not_an_arbitrary_kind(self):
        response = self.client.post(reverse("job_start"), {"kind": "features_extract"}, follow=True)
        self.assertContains(response, "Feature extraction queued")
        self.assertEqual(Job.objects.get().kind, Job.Kind.FEATURES_EXTRACT)
        response = self.client.post(reverse("job_start"), {"kind": "model_train"}, follow=True)
        self.assertContains(response, "Unknown kind of job")
        self.assertEqual(Job.objects.count(), 1)

    def test_clinicians_cannot_cancel_or_retry(self):
        job = Job.objects.create(kind=Job.Kind.MODEL_TRAIN)
        self.login(self.alice)
        self.assertEqual(self.client.post(reverse("job_cancel", args=[job.pk])).status_code, 403)
        self.assertEqual(self.client.post(reverse("job_retry", args=[job.pk])).status_code, 403)


class RedisDownTests(BaseTestCase):
    """Redis stopped: every page still answers 200, and the Retrain button says why it cannot."""

    def setUp(self):
        self.login(self.adam)
        for index in range(12):
            image_make(confirmed_grade=(0, 2)[index % 2])

    def test_pages_still_render_and_say_the_queue_is_unavailable(self):
        with use_broker(DEAD_BROKER_URL):
            for name in ("jobs", "model_versions", "home"):
                with self.subTest(page=name):
                    response = self.client.get(reverse(name))
                    self.assertEqual(response.status_code, 200)
                    if name != "home":
                        self.assertContains(response, "Retrain: queue unavailable")
                        self.assertContains(response, "Redis does not answer")

    def test_retrain_says_the_queue_is_unavailable_instead_of_failing(self):
        with use_broker(DEAD_BROKER_URL):
            response = self.client.post(reverse("model_retrain"), follow=True)
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "Retraining was not started. The job queue is unavailable")
        self.assertFalse(Job.objects.exists())

    def test_retry_says_the_queue_is_unavailable(self):
        job = Job.objects.create(kind=Job.Kind.MODEL_TRAIN, state=Job.State.FAILED)
        with use_broker(DEAD_BROKER_URL):
            response = self.client.post(reverse("job_retry", args=[job.pk]), follow=True)
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "The job queue is unavailable")


class JobDetailTableTests(BaseTestCase):
    def test_parameters_and_results_read_as_a_table_not_a_python_dict(self):
        job = Job.objects.create(
            kind=Job.Kind.FEATURES_EXTRACT,
            state=Job.State.SUCCEEDED,
            params={"image_ids": list(range(1, 16)), "activate_if_first": True},
            result={
                "computed": {"mobilenet_v2": 20},
                "seconds": 125.3,
                "reused": 0,
                "brand_new_key": "kept",
                "message": "20 image(s) computed",
            },
        )
        self.login(self.adam)
        response = self.client.get(reverse("job_detail", args=[job.pk]))
        html = response.content.decode()
        self.assertNotIn("{&#x27;", html)
        self.assertNotIn("{'", html)
        rows = {
            "Images": "15: #1, #2, #3, #4, #5, #6, #7, #8, #9, #10 and 5 more",
            "Activate if it is the first model": "yes",
            "Features computed now": "mobilenet_v2: 20",
            "Time": "2 min 05 s",
            "Features reused from the store": "0",
            "Brand new key": "kept",
        }
        for label, text in rows.items():
            self.assertInHTML(f'<tr><th scope="row">{label}</th><td>{text}</td></tr>', html)
