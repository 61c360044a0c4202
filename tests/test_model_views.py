"""Model registry pages: list with hold-out metrics, detail with plots, comparison, activation,
rollback and retraining."""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.urls import reverse

from grading.models import Job, ModelVersion, Prediction
from tests.base import BaseTestCase
from tests.factories import image_make
from tests.factories_jobs import BrokerMixin, model_version_make, redis_flush

HOLDOUT_REPORT = {
    "n": 40,
    "accuracy": 0.75,
    "qwk": 0.812,
    "confusion": [
        [10, 1, 0, 0, 0],
        [2, 3, 1, 0, 0],
        [0, 1, 8, 1, 0],
        [0, 0, 1, 5, 1],
        [0, 0, 0, 1, 4],
    ],
    "per_grade": {"0": {"precision": 0.83, "recall": 0.91, "support": 11}},
    "referable": {"sensitivity": 0.9, "specificity": 0.8, "auc": 0.947},
}
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00"
    b"\x00\x00IEND\xaeB`\x82"
)


class ModelRegistryPageTests(BrokerMixin, BaseTestCase):
    def setUp(self):
        redis_flush()
        self.login(self.adam)
        self.folder = Path(tempfile.mkdtemp(prefix="funduscope-models-"))

    def _version(self, name: str, **fields) -> ModelVersion:
        return model_version_make(name, artifact_dir=self.folder / name, **fields)

    def test_only_admins_see_the_registry(self):
        self.login(self.rita)
        self.assertEqual(self.client.get(reverse("model_versions")).status_code, 403)

    def test_the_list_shows_each_version_with_its_hold_out_figures(self):
        self._version("v1", state=ModelVersion.State.ACTIVE, metrics={"holdout": HOLDOUT_REPORT})
        self._version("v2", created_by=self.adam)
        page = self.client.get(reverse("model_versions"))
        self.assertContains(page, "Active model: <a")
        self.assertContains(page, "0.812")  # QWK
        self.assertContains(page, "75.0 %")  # accuracy
        self.assertContains(page, "90.0 %")  # referable sensitivity
        self.assertContains(page, "0.947")  # AUC
        self.assertContains(page, "0: 10")  # training images per grade
        self.assertContains(page, "Candidate")
        self.assertContains(page, 'class="button activate" data-version="v2"')

    def test_before_any_activation_the_page_says_the_first_model_is_activated_automatically(self):
        page = self.client.get(reverse("model_versions"))
        self.assertContains(page, "No model is active yet")
        self.assertContains(page, "The first model trained at setup is activated automatically")

    def test_the_detail_page_shows_the_plots_through_a_protected_view(self):
        version = self._version("v1", metrics={"holdout": HOLDOUT_REPORT})
        (self.folder / "v1" / "confusion.png").write_bytes(PNG)
        page = self.client.get(reverse("model_version_detail", args=[version.pk]))
        plot_url = reverse("model_artifact_file", args=[version.pk, "confusion.png"])
        self.assertContains(page, plot_url)
        self.assertContains(page, "0.812")
        response = self.client.get(plot_url)
        self.assertEqual(response["Content-Type"], "image/png")
        self.assertEqual(b"".join(response.streaming_content), PNG)
        self.client.logout()
        self.assertEqual(self.client.get(plot_url).status_code, 302)

    def test_only_known_plot_files_are_served(self):
        version = self._version("v1")
        for name in ("metadata.json", "..", "head.keras", "curves.png"):
            with self.subTest(name=name):
                url = reverse("model_artifact_file", args=[version.pk, name])
                self.assertEqual(self.client.get(url).status_code, 404)

    def test_activate_and_roll_back_from_the_page(self):
        v1 = self._version("v1", state=ModelVersion.State.ACTIVE)
        v2 = self._version("v2")
        ModelVersion.objects.filter(pk=v1.pk).update(activated_at="2024-01-01T00:00:00Z")
        response = self.client.post(reverse("model_version_activate", args=[v2.pk]), follow=True)
        self.assertContains(response, "v2 is now the active model (it replaces v1")
        self.assertContains(response, "Re-activate the previously active version, v1")
        response = self.client.post(reverse("model_rollback"), follow=True)
        self.assertContains(response, "v1 is now the active model")
        v1.refresh_from_db()
        self.assertEqual(v1.state, ModelVersion.State.ACTIVE)

    def test_only_admins_may_activate(self):
        version = self._version("v1")
        self.login(self.alice)
        response = self.client.post(reverse("model_version_activate", args=[version.pk]))
        self.assertEqual(response.status_code, 403)
        version.refresh_from_db()
        self.assertEqual(version.state, ModelVersion.State.CANDIDATE)

    def test_retrain_queues_one_job_and_a_second_click_reuses_it(self):
        for index in range(12):
            image_make(confirmed_grade=(0, 2)[index % 2])
        first = self.client.post(reverse("model_retrain"), follow=True)
        self.assertContains(first, "Retraining queued")
        second = self.client.post(reverse("model_retrain"), follow=True)
        self.assertContains(second, "no second one was started")
        self.assertEqual(Job.objects.filter(kind=Job.Kind.MODEL_TRAIN).count(), 1)

    def test_the_retrain_button_offers_the_fast_and_the_fine_tuning_mode(self):
        response = self.client.get(reverse("model_versions"))
        self.assertContains(response, "Fast: head on cached features (seconds)")
        self.assertContains(
            response, "Fine-tune the whole network (about 35 min on 2 CPU cores, minutes on a GPU)"
        )
        self.assertContains(response, 'name="mode" value="head" checked')

    def test_fine_tuning_is_queued_as_a_retrain_job_in_finetune_mode(self):
        for index in range(12):
            image_make(confirmed_grade=(0, 2)[index % 2])
        response = self.client.post(reverse("model_retrain"), {"mode": "finetune"}, follow=True)
        self.assertContains(response, "Fine-tuning queued")
        job = Job.objects.get(kind=Job.Kind.MODEL_TRAIN)
        self.assertEqual(job.params["mode"], "finetune")

    def test_retrain_defaults_to_the_fast_mode_and_refuses_an_unknown_one(self):
        for index in range(12):
            image_make(confirmed_grade=(0, 2)[index % 2])
        response = self.client.post(reverse("model_retrain"), {"mode": "gpu-magic"}, follow=True)
        self.assertContains(response, "unknown training mode")
        self.assertFalse(Job.objects.exists())
        self.client.post(reverse("model_retrain"))
        self.assertEqual(Job.objects.get(kind=Job.Kind.MODEL_TRAIN).params["mode"], "head")

    def test_retrain_without_enough_confirmed_grades_explains_why(self):
        response = self.client.post(reverse("model_retrain"), follow=True)
        self.assertContains(response, "Not enough confirmed grades to train a model")
        self.assertFalse(Job.objects.exists())


class ModelCompareTests(BaseTestCase):
    def setUp(self):
        self.login(self.adam)
        self.images = [image_make(confirmed_grade=grade) for grade in (0, 0, 2, 2, 4)]
        shas = [image.sha256 for image in self.images]
        self.first = model_version_make("v1", holdout_sha256=shas[:4])
        self.second = model_version_make("v2", holdout_sha256=shas[1:])
        # v1 gets everything right; v2 calls every image grade 0.
        for image in self.images:
            grade = image.confirmed_grade_id
            for version, predicted in ((self.first, grade), (self.second, 0)):
                probabilities = [0.0] * 5
                probabilities[predicted] = 1.0
                Prediction.objects.create(
                    image=image,
                    model_version=version,
                    probabilities=probabilities,
                    predicted_grade_id=predicted,
                )

    def test_it_compares_both_versions_on_the_hold_out_images_they_share(self):
        response = self.client.get(
            reverse("model_compare"), {"a": self.first.pk, "b": self.second.pk}
        )
        comparison = response.context["comparison"]
        self.assertEqual(comparison.n_images, 3)  # images 1..3 are held out by both
        self.assertEqual(comparison.reports[self.first.pk]["accuracy"], 1.0)
        self.assertAlmostEqual(comparison.reports[self.second.pk]["accuracy"], 1 / 3)
        self.assertEqual(comparison.disagreements, 2)
        self.assertContains(response, "same 3 images")

    def test_it_asks_for_two_different_versions(self):
        response = self.client.get(
            reverse("model_compare"), {"a": self.first.pk, "b": self.first.pk}
        )
        self.assertContains(response, "Choose two different versions")
