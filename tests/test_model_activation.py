"""Activation and rollback ask first, showing the paired comparison; the registry shows
cross-validated figures with intervals, when training finished and how long it took."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import numpy as np
from django.urls import reverse

from grading.models import Job, ModelVersion
from grading.selectors.model_versions import OOF_FILE, model_versions_compare
from tests.base import BaseTestCase
from tests.factories_jobs import BrokerMixin, model_version_make, redis_flush
from tests.factories_review import images_bulk_make

N_IMAGES = 120


def patients_images_make(grades: list[int]) -> list:
    """Confirmed images, two per patient (intervals resample whole patients)."""
    images = []
    for start in range(0, len(grades), 2):
        images += images_bulk_make(2, confirmed_grades=grades[start : start + 2])
    return images


def cv_metrics(qwk: float, low: float, high: float, n: int = N_IMAGES) -> dict:
    pooled = {
        "n": n,
        "qwk": qwk,
        "accuracy": 0.7,
        "ece": 0.041,
        "referable": {"sensitivity": 0.9, "specificity": 0.85, "auc": 0.95},
    }
    return {
        "evaluation": "done",
        "n_train": n,
        "ece": 0.041,
        "cv": {"n": n, "folds": 5, "pooled": pooled, "intervals": {"qwk": [low, high]}},
    }


class ActivationConfirmationTests(BrokerMixin, BaseTestCase):
    def setUp(self):
        redis_flush()
        self.login(self.adam)
        self.folder = Path(tempfile.mkdtemp(prefix="funduscope-activation-"))
        grades = [i % 5 for i in range(N_IMAGES)]
        self.images = patients_images_make(grades)
        rng = np.random.default_rng(3)
        truth = np.asarray(grades)
        # v1 is right on every image; v2 is one grade off on two images in three.
        self.v1 = self._version("v1", truth, state=ModelVersion.State.ACTIVE)
        off = np.where(rng.random(N_IMAGES) < 0.67, np.clip(truth + 1, 0, 4), truth)
        off[truth == 4] = 3
        self.v2 = self._version("v2", off)
        ModelVersion.objects.filter(pk=self.v1.pk).update(activated_at="2024-01-01T00:00:00Z")

    def _version(self, name: str, predicted: np.ndarray, **fields) -> ModelVersion:
        version = model_version_make(
            name, artifact_dir=self.folder / name, metrics=cv_metrics(0.8, 0.75, 0.85), **fields
        )
        probabilities = np.eye(5)[predicted] * 0.9 + 0.02
        np.savez_compressed(
            self.folder / name / OOF_FILE,
            sha256=np.asarray([image.sha256 for image in self.images]),
            grade=np.asarray([image.confirmed_grade_id for image in self.images]),
            predicted=predicted,
            probabilities=probabilities,
        )
        return version

    def test_the_comparison_is_paired_on_the_same_out_of_fold_images(self):
        comparison = model_versions_compare(first=self.v1, second=self.v2)
        self.assertEqual(comparison.n_images, N_IMAGES)
        self.assertEqual(comparison.reports[self.v1.pk]["qwk"], 1.0)
        paired = comparison.paired
        self.assertAlmostEqual(
            paired["difference"], comparison.reports[self.v2.pk]["qwk"] - 1.0, places=9
        )
        low, high = paired["interval"]
        self.assertLess(high, 0)
        self.assertLessEqual(low, paired["difference"])
        self.assertEqual(paired["verdict"], "worse")
        self.assertEqual(
            model_versions_compare(first=self.v2, second=self.v1).paired["verdict"], "better"
        )
        same = model_versions_compare(first=self.v1, second=self.v1)
        self.assertEqual(same.paired["verdict"], "indistinguishable")

    def test_activation_asks_first_and_shows_whether_the_candidate_is_better(self):
        page = self.client.get(reverse("model_version_activate", args=[self.v2.pk]))
        self.assertEqual(page.status_code, 200)
        self.assertContains(page, "Activate v2?")
        self.assertContains(page, "v2 is worse than v1")
        self.assertContains(page, 'data-verdict="worse"')
        self.assertContains(page, "Activate v2 (replacing v1)")
        self.v2.refresh_from_db()
        self.assertEqual(self.v2.state, ModelVersion.State.CANDIDATE, "a GET changes nothing")
        # v2 is worse: the button alone does not activate it, the explicit second confirmation does.
        self.assertContains(page, 'name="accept_worse"')
        refused = self.client.post(reverse("model_version_activate", args=[self.v2.pk]))
        self.assertContains(refused, "Not activated", status_code=400)
        self.v2.refresh_from_db()
        self.assertEqual(self.v2.state, ModelVersion.State.CANDIDATE)
        response = self.client.post(
            reverse("model_version_activate", args=[self.v2.pk]),
            {"accept_worse": "on"},
            follow=True,
        )
        self.assertContains(response, "v2 is now the active model")

    def test_the_rollback_button_says_what_it_does_and_asks_first(self):
        self.client.post(
            reverse("model_version_activate", args=[self.v2.pk]), {"accept_worse": "on"}
        )
        self.client.post(reverse("model_rollback"))  # back to v1; v2 (newer) is now "previous"
        page = self.client.get(reverse("model_versions"))
        self.assertContains(page, "Re-activate the previously active version, v2")
        self.assertNotContains(page, "Roll back to")
        confirm = self.client.get(reverse("model_rollback"))
        self.assertContains(confirm, "Re-activate the previously active version, v2?")
        self.assertContains(confirm, "v2 was trained after v1")
        self.assertContains(confirm, "v2 is worse than v1")
        self.assertContains(confirm, "Re-activate v2 (replacing v1)")
        self.v1.refresh_from_db()
        self.assertEqual(self.v1.state, ModelVersion.State.ACTIVE, "a GET changes nothing")

    def test_a_better_version_needs_no_second_confirmation(self):
        self.client.post(
            reverse("model_version_activate", args=[self.v2.pk]), {"accept_worse": "on"}
        )
        page = self.client.get(reverse("model_version_activate", args=[self.v1.pk]))
        self.assertNotContains(page, 'name="accept_worse"')
        self.client.post(reverse("model_version_activate", args=[self.v1.pk]))
        self.v1.refresh_from_db()
        self.assertEqual(self.v1.state, ModelVersion.State.ACTIVE)

    def test_rolling_back_to_a_worse_version_needs_the_second_confirmation_too(self):
        self.client.post(
            reverse("model_version_activate", args=[self.v2.pk]), {"accept_worse": "on"}
        )
        self.client.post(reverse("model_rollback"))  # v1 is better: no second confirmation
        self.v1.refresh_from_db()
        self.assertEqual(self.v1.state, ModelVersion.State.ACTIVE)
        refused = self.client.post(reverse("model_rollback"))  # back to v2, worse
        self.assertEqual(refused.status_code, 400)
        self.v1.refresh_from_db()
        self.assertEqual(self.v1.state, ModelVersion.State.ACTIVE)

    def test_only_admins_see_the_confirmation(self):
        self.login(self.rita)
        self.assertEqual(
            self.client.get(reverse("model_version_activate", args=[self.v2.pk])).status_code, 403
        )


class RegistryColumnsTests(BrokerMixin, BaseTestCase):
    def setUp(self):
        redis_flush()
        self.login(self.adam)
        self.folder = Path(tempfile.mkdtemp(prefix="funduscope-registry-"))

    def test_it_shows_cross_validated_figures_with_intervals_and_ece(self):
        model_version_make(
            "v1", artifact_dir=self.folder / "v1", metrics=cv_metrics(0.833, 0.801, 0.861)
        )
        page = self.client.get(reverse("model_versions"))
        self.assertContains(page, "5-fold CV, 120 images")
        self.assertContains(page, "0.833")
        self.assertContains(page, "[0.801, 0.861]")
        self.assertContains(page, "0.041")  # ECE

    def test_trained_shows_when_training_finished_and_how_long_it_took(self):
        version = model_version_make("v1", artifact_dir=self.folder / "v1")
        started = version.created_at
        ModelVersion.objects.filter(pk=version.pk).update(
            trained_at=started + dt.timedelta(minutes=2, seconds=5)
        )
        page = self.client.get(reverse("model_versions"))
        finished = (started + dt.timedelta(minutes=2, seconds=5)).astimezone()
        self.assertContains(page, f'<span class="finished">{finished:%Y-%m-%d %H:%M}</span>')
        self.assertContains(page, '<span class="took">2 min 05 s</span>')

    def test_a_version_being_cross_validated_says_evaluating_with_its_progress(self):
        version = model_version_make(
            "v1", artifact_dir=self.folder / "v1", metrics={"evaluation": "pending"}
        )
        Job.objects.create(
            kind=Job.Kind.MODEL_EVALUATE,
            state=Job.State.RUNNING,
            progress=40,
            model_version=version,
        )
        page = self.client.get(reverse("model_versions"))
        self.assertContains(page, "evaluating… 40 %")
        detail = self.client.get(reverse("model_version_detail", args=[version.pk]))
        self.assertContains(detail, "Evaluating… 40 %")


class HomeBetterCandidateTests(BaseTestCase):
    """The admin home's "candidate better than the active model" alert trusts the paired
    comparison over a higher registry figure."""

    def setUp(self):
        self.folder = Path(tempfile.mkdtemp(prefix="funduscope-home-better-"))
        grades = [i % 5 for i in range(N_IMAGES)]
        self.images = patients_images_make(grades)
        self.truth = np.asarray(grades)

    def _version(self, name: str, predicted: np.ndarray, qwk: float, **fields) -> ModelVersion:
        version = model_version_make(
            name,
            artifact_dir=self.folder / name,
            metrics=cv_metrics(qwk, qwk - 0.03, qwk + 0.03),
            **fields,
        )
        np.savez_compressed(
            self.folder / name / OOF_FILE,
            sha256=np.asarray([image.sha256 for image in self.images]),
            grade=self.truth,
            predicted=predicted,
            probabilities=np.eye(5)[predicted] * 0.9 + 0.02,
        )
        return version

    def test_a_higher_figure_within_the_noise_is_not_an_alert(self):
        from grading.selectors.home import candidates_better_than_active

        active = self._version("v1", self.truth, 0.80, state=ModelVersion.State.ACTIVE)
        # Same predictions, a (made-up) higher registry figure: the paired test sees no difference.
        self._version("v2", self.truth, 0.85)
        self.assertEqual(candidates_better_than_active(active=active), [])

    def test_a_candidate_the_paired_comparison_finds_better_is_an_alert(self):
        from grading.selectors.home import candidates_better_than_active

        noisy = np.where(np.arange(N_IMAGES) % 2 == 0, np.clip(self.truth + 1, 0, 4), self.truth)
        active = self._version("v1", noisy, 0.80, state=ModelVersion.State.ACTIVE)
        better = self._version("v2", self.truth, 0.85)
        self.assertEqual(
            [candidate for candidate, _ in candidates_better_than_active(active=active)], [better]
        )


class AutoActivationLabelTests(BrokerMixin, BaseTestCase):
    def test_a_rollback_relabels_the_first_models_automatic_activation(self):
        redis_flush()
        folder = Path(tempfile.mkdtemp(prefix="funduscope-relabel-"))
        v1 = model_version_make("v1", artifact_dir=folder / "v1", state=ModelVersion.State.ACTIVE)
        ModelVersion.objects.filter(pk=v1.pk).update(activated_at="2024-01-01T00:00:00Z")
        Job.objects.create(
            kind=Job.Kind.MODEL_TRAIN,
            state=Job.State.SUCCEEDED,
            model_version=v1,
            result={"auto_activated": True},
        )
        v2 = model_version_make("v2", artifact_dir=folder / "v2")
        self.login(self.adam)
        self.assertContains(self.client.get(reverse("model_versions")), "activated automatically")
        self.client.post(reverse("model_version_activate", args=[v2.pk]))
        self.client.post(reverse("model_rollback"))
        v1.refresh_from_db()
        self.assertEqual(v1.state, ModelVersion.State.ACTIVE)
        page = self.client.get(reverse("model_versions"))
        self.assertNotContains(page, "activated automatically (first model)")
        detail = self.client.get(reverse("model_version_detail", args=[v1.pk]))
        self.assertNotContains(detail, "activated automatically")


class DurationTests(BrokerMixin, BaseTestCase):
    def test_the_registry_and_the_jobs_page_give_one_duration_for_one_training(self):
        redis_flush()
        folder = Path(tempfile.mkdtemp(prefix="funduscope-durations-"))
        version = model_version_make("v1", artifact_dir=folder / "v1")
        started = version.created_at
        # The model is ready after 5 min 36 s; predicting every image ends the job at 6 min 14 s.
        ModelVersion.objects.filter(pk=version.pk).update(
            trained_at=started + dt.timedelta(minutes=5, seconds=36)
        )
        Job.objects.create(
            kind=Job.Kind.MODEL_TRAIN,
            state=Job.State.SUCCEEDED,
            model_version=version,
            started_at=started,
            finished_at=started + dt.timedelta(minutes=6, seconds=14),
        )
        self.login(self.adam)
        registry = self.client.get(reverse("model_versions"))
        self.assertContains(registry, '<span class="took">6 min 14 s</span>')
        self.assertNotContains(registry, "5 min 36 s")
        self.assertContains(self.client.get(reverse("jobs")), "6 min 14 s")
        detail = self.client.get(reverse("model_version_detail", args=[version.pk]))
        self.assertContains(detail, "took 6 min 14 s")
        self.assertContains(detail, "the model was ready after 5 min 36 s")
