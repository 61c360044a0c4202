"""The home page: each role's starting point."""

from __future__ import annotations

import datetime as dt
from unittest import mock

from django.urls import reverse
from django.utils import timezone

from grading.models import Grade, Job, ModelVersion
from tests.factories import image_make
from tests.factories_grading import GradingTestCase, grade_give, workbench_set
from tests.factories_jobs import model_version_make

HOME = "/"


def holdout(qwk: float, n: int = 120) -> dict:
    return {
        "holdout": {
            "n": n,
            "qwk": qwk,
            "accuracy": 0.7,
            "referable": {"sensitivity": 0.9, "specificity": 0.88, "auc": 0.95},
        }
    }


class ClinicianHomeTests(GradingTestCase):
    def test_it_shows_my_queue_and_what_i_did_today_and_this_week(self):
        for _ in range(3):
            image_make()
        done_now = image_make()
        grade_give(done_now, self.alice, 1)
        earlier = image_make()
        grade_give(earlier, self.alice, 2)
        # A grade from ten days ago counts neither today nor this week.
        Grade.objects.filter(image=earlier).update(
            created_at=timezone.now() - dt.timedelta(days=10)
        )
        self.login(self.alice)
        response = self.client.get(HOME)
        self.assertEqual(response.status_code, 200)
        clinician = response.context["clinician_home"]
        self.assertEqual(clinician.waiting_for_me, 3)
        self.assertEqual((clinician.done_today, clinician.done_this_week), (1, 1))
        self.assertContains(response, "Start grading")
        self.assertContains(response, reverse("worklist_next"))
        self.assertContains(response, f'href="{reverse("worklist")}"')
        self.assertIsNone(response.context["admin_home"])
        self.assertIsNone(response.context["reviewer_home"])

    def test_a_long_queue_is_counted_up_to_the_worklist_cap(self):
        # Counting 100,000 pending images exactly for every home page costs 0.3 s; like the
        # worklist, the home page counts up to the cap and says "250+".
        for _ in range(4):
            image_make()
        self.login(self.alice)
        with mock.patch("grading.selectors.worklist.WORKLIST_COUNT_CAP", 3):
            response = self.client.get(HOME)
        clinician = response.context["clinician_home"]
        self.assertEqual((clinician.waiting_for_me, clinician.waiting_capped), (3, True))
        self.assertContains(response, "<strong data-waiting-for-me>3+</strong>", html=True)
        self.assertFalse(self.client.get(HOME).context["clinician_home"].waiting_capped)

    def test_it_says_so_when_nothing_waits_and_still_links_to_the_worklist(self):
        self.login(self.alice)
        response = self.client.get(HOME)
        self.assertContains(response, "Nothing is waiting for your grade")
        self.assertNotContains(response, "data-start-grading")
        self.assertContains(response, f'href="{reverse("worklist")}"')


class ReviewerHomeTests(GradingTestCase):
    def test_it_shows_the_adjudication_queue(self):
        workbench_set(grades_required=2)
        image = image_make()
        grade_give(image, self.alice, 1)
        grade_give(image, self.bob, 3)
        self.login(self.rita)
        response = self.client.get(HOME)
        self.assertEqual(response.context["reviewer_home"].adjudication_waiting, 1)
        self.assertContains(response, reverse("adjudicate", args=[image.pk]))
        self.assertContains(response, "Adjudicate the oldest")
        self.assertContains(response, "disagrees with by 2 or more grades")
        self.assertIsNone(response.context["clinician_home"])


class AdminHomeTests(GradingTestCase):
    def test_it_shows_the_active_model_with_the_registry_figures_and_sample_size(self):
        model_version_make("v1", state=ModelVersion.State.ACTIVE, metrics=holdout(0.8123, n=87))
        self.login(self.adam)
        response = self.client.get(HOME)
        self.assertContains(response, "v1")
        self.assertContains(response, "0.812")
        self.assertContains(response, "Measured on 87 images")

    def test_it_alerts_on_a_failed_job_until_a_later_one_succeeds(self):
        failed = Job.objects.create(
            kind=Job.Kind.MODEL_TRAIN,
            state=Job.State.FAILED,
            error="MemoryError: out of memory\n...",
        )
        self.login(self.adam)
        response = self.client.get(HOME)
        self.assertContains(response, f"Retraining #{failed.pk} failed")
        self.assertContains(response, "MemoryError: out of memory")
        self.assertContains(response, reverse("job_detail", args=[failed.pk]))

        Job.objects.create(kind=Job.Kind.MODEL_TRAIN, state=Job.State.SUCCEEDED)
        self.assertNotContains(self.client.get(HOME), f"Retraining #{failed.pk} failed")

    def test_it_alerts_on_images_waiting_for_adjudication(self):
        workbench_set(grades_required=2)
        image = image_make()
        grade_give(image, self.alice, 0)
        grade_give(image, self.bob, 2)
        self.login(self.adam)
        self.assertContains(self.client.get(HOME), "1 image waiting for adjudication")

    def test_it_alerts_on_a_candidate_better_than_the_active_model(self):
        active = model_version_make("v1", state=ModelVersion.State.ACTIVE, metrics=holdout(0.70))
        better = model_version_make("v2", metrics=holdout(0.79))
        model_version_make("v3", metrics=holdout(0.65))
        self.login(self.adam)
        response = self.client.get(HOME)
        self.assertContains(response, "Candidate v2")
        self.assertNotContains(response, "Candidate v3")
        self.assertContains(response, f"?a={active.pk}&amp;b={better.pk}")

    def test_a_running_job_is_listed_with_its_progress(self):
        job = Job.objects.create(
            kind=Job.Kind.MODEL_TRAIN, state=Job.State.RUNNING, progress=40, message="Extracting"
        )
        self.login(self.adam)
        response = self.client.get(HOME)
        self.assertContains(response, reverse("job_detail", args=[job.pk]))
        self.assertContains(response, 'aria-valuenow="40"')
        self.assertContains(response, "Extracting")
        self.assertContains(response, 'hx-trigger="every 3s"')  # the card follows the job

    def test_the_jobs_card_stops_polling_when_nothing_runs(self):
        Job.objects.create(kind=Job.Kind.MODEL_TRAIN, state=Job.State.SUCCEEDED)
        self.login(self.adam)
        response = self.client.get(HOME)
        self.assertContains(response, "No job is running.")
        self.assertNotContains(response, "data-polling")


class NoRoleHomeTests(GradingTestCase):
    def test_an_account_without_a_role_is_told_what_to_ask_for(self):
        self.login(self.nora)
        self.assertContains(self.client.get(HOME), "has no role yet")
