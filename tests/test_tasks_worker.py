"""Tasks run by a real Celery worker on a real Redis (test database 15): feature extraction,
retraining, activation/rollback and per-upload predictions, failures shown on the jobs page.

One embedded worker (solo pool, like the `ml` worker) serves the whole class. The real
MobileNetV2 weights from ../shared/weights compute features of ~20 tiny synthetic photographs
and the head trains for a few epochs, so a retrain takes seconds.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import transaction
from django.test import TransactionTestCase, override_settings
from django.urls import reverse

from grading.models import Image, Job, ModelVersion, Prediction
from grading.selectors.model_versions import model_version_active
from grading.selectors.predictions import prediction_cam_path, prediction_for_image
from grading.services import jobs as job_services
from grading.services import model_versions as version_services
from grading.services.predictions import images_predict_enqueue
from tests.factories import fundus_jpeg_bytes, image_make, user_make
from tests.factories_jobs import (
    FINISHED,
    BrokerMixin,
    TrainingMixin,
    confirmed_images_make,
    job_wait,
    wait_until,
)


def upload_make(seed: int) -> Image:
    """A new, ungraded photograph as an upload stores it, then its prediction is requested."""
    image = image_make(seed=seed)
    assert images_predict_enqueue(image_ids=[image.pk])
    return image


@pytest.mark.slow
class WorkerTaskTests(TrainingMixin, BrokerMixin, TransactionTestCase):
    tmp_prefix = "funduscope-worker-"
    train_epochs = 6

    def setUp(self):
        self.adam = user_make("adam", "admin")

    def _retrain(self, *, timeout: float = 240) -> tuple[Job, list[int]]:
        job, created = version_services.model_retrain_request(user=self.adam)
        self.assertTrue(created)
        progress: list[int] = []
        job_wait(
            job,
            states=FINISHED,
            timeout=timeout,
            on_poll=lambda j: progress.append(j.progress) if j.state == "running" else None,
        )
        self.assertEqual(job.state, Job.State.SUCCEEDED, job.error)
        return job, progress

    # -- retraining ----------------------------------------------------------------------------

    def test_a_retrain_goes_queued_running_succeeded_with_progress_and_makes_a_candidate(self):
        images = confirmed_images_make()
        pending = image_make(seed=77)  # not confirmed: predicted, never trained on
        job, progress = self._retrain()

        moving = sorted(set(progress) - {0, 100})
        self.assertGreaterEqual(len(moving), 3, f"progress seen: {progress}")
        self.assertEqual(progress, sorted(progress), "the bar never moves backwards")
        self.assertEqual(job.progress, 100)
        self.assertIn("candidate", job.message)

        version = ModelVersion.objects.get(pk=job.result["model_version_id"])
        self.assertEqual(job.model_version, version)
        self.assertEqual(version.state, ModelVersion.State.CANDIDATE)
        self.assertIsNone(model_version_active(), "a retrain never activates by itself")
        self.assertEqual(version.created_by, self.adam)
        self.assertEqual(version.backbones, ["mobilenet_v2"])
        folder = Path(version.artifact_path)
        for name in ("head.keras", "metadata.json", "curves.png", "training_set.csv"):
            self.assertTrue((folder / name).is_file(), name)
        self.assertEqual(folder.parent, Path(self._tmp / "models"))

        # The released model learns from every confirmed image (its figures come from the
        # cross-validation job, tests/test_model_evaluation.py).
        self.assertEqual(version.metrics["n_train"], len(images))
        self.assertEqual(sum(version.train_counts.values()), len(images), "every confirmed image")
        self.assertEqual(version.metrics["evaluation"], "pending")
        self.assertTrue(
            Job.objects.filter(kind=Job.Kind.MODEL_EVALUATE, model_version=version).exists()
        )

        # Every image, the pending one included, has a prediction from the new version.
        self.assertEqual(version.predictions.count(), Image.objects.count())
        prediction = prediction_for_image(image=pending, model_version=version)
        self.assertEqual(len(prediction.probabilities), 5)
        self.assertAlmostEqual(sum(prediction.probabilities), 1.0, places=4)

        # The registry page shows it with its hold-out figures and plots.
        self.client.force_login(self.adam)
        page = self.client.get(reverse("model_version_detail", args=[version.pk]))
        self.assertContains(page, reverse("model_artifact_file", args=[version.pk, "curves.png"]))

    def test_a_failing_retrain_ends_failed_with_its_error_on_the_jobs_page(self):
        for index in range(3):
            image_make(seed=300 + index, confirmed_grade=0)
        # Queued directly, as the automatic retrain or the setup would (the page checks first).
        job, _ = job_services.job_enqueue(kind=Job.Kind.MODEL_TRAIN, created_by=self.adam)
        job_wait(job, states=FINISHED, timeout=60)
        self.assertEqual(job.state, Job.State.FAILED)
        self.assertIn("TrainingDataError: Not enough confirmed grades", job.message)
        self.assertIn("Traceback", job.error)
        self.assertFalse(ModelVersion.objects.exists())

        self.client.force_login(self.adam)
        page = self.client.get(reverse("jobs"))
        self.assertContains(page, "TrainingDataError: Not enough confirmed grades")
        self.assertContains(page, reverse("job_retry", args=[job.pk]))

    def test_activation_and_rollback_switch_which_version_predicts_new_uploads(self):
        confirmed_images_make()
        first_job, _ = self._retrain()
        image_make(seed=901, confirmed_grade=2)  # a new confirmed grade: v2 differs from v1
        second_job, _ = self._retrain()
        v1 = ModelVersion.objects.get(pk=first_job.result["model_version_id"])
        v2 = ModelVersion.objects.get(pk=second_job.result["model_version_id"])
        self.assertEqual((v1.name, v2.name), ("v1", "v2"))

        def predicted_by(image: Image) -> ModelVersion:
            wait_until(
                lambda: (
                    not Job.objects.filter(
                        kind=Job.Kind.IMAGES_PREDICT, state__in=job_services.OPEN_STATES
                    ).exists()
                ),
                timeout=120,
                what="the upload's prediction",
            )
            rows = Prediction.objects.filter(image=image)
            self.assertEqual(rows.count(), 1, "one prediction, by the version active at upload")
            return rows.get().model_version

        version_services.model_version_activate(version=v1, user=self.adam)
        upload = upload_make(seed=911)
        self.assertEqual(predicted_by(upload), v1)
        prediction = prediction_for_image(image=upload)
        cam = prediction_cam_path(prediction=prediction)
        self.assertIsNotNone(cam, "a CAM overlay is written with the upload's prediction")
        self.assertEqual(cam.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")

        version_services.model_version_activate(version=v2, user=self.adam)
        self.assertEqual(predicted_by(upload_make(seed=912)), v2)

        activation = version_services.model_version_rollback(user=self.adam)
        self.assertEqual(activation.version, v1)
        self.assertEqual(predicted_by(upload_make(seed=913)), v1)
        self.assertEqual(ModelVersion.objects.filter(state=ModelVersion.State.ACTIVE).count(), 1)

    # -- feature extraction --------------------------------------------------------------------

    def test_feature_extraction_succeeds_and_is_incremental(self):
        images = [image_make(seed=index) for index in range(4)]
        job, created = job_services.job_enqueue(kind=Job.Kind.FEATURES_EXTRACT)
        self.assertTrue(created)
        job_wait(job, states=FINISHED, timeout=120)
        self.assertEqual(job.state, Job.State.SUCCEEDED, job.error)
        self.assertEqual(job.progress, 100)
        self.assertTrue(job.worker)
        self.assertLessEqual(job.started_at, job.finished_at)
        first_computed = job.result["computed"]["mobilenet_v2"]
        self.assertLessEqual(first_computed, len(images))

        image_make(seed=99)
        again, _ = job_services.job_enqueue(kind=Job.Kind.FEATURES_EXTRACT)
        job_wait(again, states=FINISHED, timeout=120)
        self.assertEqual(again.state, Job.State.SUCCEEDED, again.error)
        self.assertEqual(again.result["computed"], {"mobilenet_v2": 1}, "only the new image")

    def test_augmentation_stores_the_copies_features_for_retraining_only(self):
        from mlcore.data.augment import AugmentConfig
        from mlcore.features.store import FeatureStore, store_path
        from mlcore.pipelines.training import augment_store_dir

        images = confirmed_images_make(count=10, patients=5)
        job, _ = job_services.job_enqueue(kind=Job.Kind.IMAGES_AUGMENT, params={"variants": 2})
        job_wait(job, states=FINISHED, timeout=120)
        self.assertEqual(job.state, Job.State.SUCCEEDED, job.error)
        self.assertEqual((job.result["images"], job.result["variants"]), (10, 2))

        # Where a retrain with the same augmentation setting looks for them.
        folder = augment_store_dir(self._tmp / "features", AugmentConfig(), seed=2017)
        path = store_path(folder, "mobilenet_v2", "none")
        with FeatureStore(
            path, backbone="mobilenet_v2", preprocessing="none", feature_dim=1280, mode="r"
        ) as store:
            keys = store.keys()
        expected = {f"{image.sha256}#v{k}" for image in images for k in (1, 2)}
        self.assertEqual(keys, expected, "copies only, never the originals")

    def test_a_damaged_image_fails_extraction_with_its_error_shown(self):
        image = image_make(seed=7)
        Path(image.file.path).write_bytes(b"this is no longer a JPEG")  # storage damaged
        job, _ = job_services.job_enqueue(kind=Job.Kind.FEATURES_EXTRACT, created_by=self.adam)
        job_wait(job, states=FINISHED, timeout=120)
        self.assertEqual(job.state, Job.State.FAILED)
        self.assertIn("ImageLoadError", job.message)
        self.assertIn(image.sha256, job.error)

    def test_a_job_cancelled_before_it_starts_is_skipped_by_the_worker(self):
        with transaction.atomic():
            job, _ = job_services.job_enqueue(kind=Job.Kind.FEATURES_EXTRACT)
            job_services.job_cancel(job=job)  # the task is sent at commit, already cancelled
        probe, _ = job_services.job_enqueue(kind=Job.Kind.FEATURES_EXTRACT)
        job_wait(probe, states=FINISHED, timeout=120)
        job.refresh_from_db()
        self.assertEqual(job.state, Job.State.CANCELLED)
        self.assertIsNone(job.started_at)

    # -- first start ---------------------------------------------------------------------------

    def test_bootstrap_trains_and_activates_the_first_model_only(self):
        demo = self._tmp / "demo"
        for index in range(16):
            grade = 2 if index % 2 else 0
            folder = demo / str(grade)
            folder.mkdir(parents=True, exist_ok=True)
            data = fundus_jpeg_bytes(
                seed=7000 + index, lesion=(64, 64) if grade else None, framed=True
            )
            (folder / f"img{index}.jpg").write_bytes(data)
        with override_settings(FUNDUS_DEMO_DIR=str(demo)):
            call_command("bootstrap", stdout=io.StringIO())
        job = Job.objects.get(kind=Job.Kind.MODEL_TRAIN)
        self.assertTrue(job.params["activate_if_first"])
        job_wait(job, states=FINISHED, timeout=240)
        self.assertEqual(job.state, Job.State.SUCCEEDED, job.error)
        self.assertTrue(job.result["auto_activated"])
        first = model_version_active()
        self.assertEqual(first.pk, job.result["model_version_id"])

        self.client.force_login(user_make("admin2", "admin"))
        page = self.client.get(reverse("model_versions"))
        self.assertContains(page, "activated automatically (first model)")

        # Later retrains stay candidates, even one queued the same way.
        again, _ = job_services.job_enqueue(
            kind=Job.Kind.MODEL_TRAIN, params={"activate_if_first": True}
        )
        job_wait(again, states=FINISHED, timeout=240)
        self.assertEqual(again.state, Job.State.SUCCEEDED, again.error)
        self.assertFalse(again.result["auto_activated"])
        self.assertEqual(model_version_active(), first)
