"""A real retrain, end to end on a real worker: the released model learns from every confirmed
image, its predictions of those are flagged, the review page leaves them out unless asked, and a
second job cross-validates the version (out-of-fold figures with bootstrap intervals)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.test import TransactionTestCase
from django.urls import reverse
from django.utils import timezone

from grading.models import GradeLevel, Image, Job, ModelVersion, Prediction
from grading.selectors.model_versions import OOF_FILE, model_version_training_sha256
from grading.services import model_versions as version_services
from tests.factories import image_make, user_make
from tests.factories_jobs import (
    FINISHED,
    BrokerMixin,
    TrainingMixin,
    confirmed_images_make,
    job_wait,
    wait_until,
)


@pytest.mark.slow
class RetrainEvaluationTests(TrainingMixin, BrokerMixin, TransactionTestCase):
    tmp_prefix = "funduscope-evaluation-"
    train_epochs = 4

    def setUp(self):
        self.adam = user_make("adam", "admin")
        self.rita = user_make("rita", "reviewer")

    def _retrain(self) -> tuple[ModelVersion, Job]:
        job, _ = version_services.model_retrain_request(user=self.adam)
        job_wait(job, states=FINISHED, timeout=300)
        self.assertEqual(job.state, Job.State.SUCCEEDED, job.error)
        version = ModelVersion.objects.get(pk=job.result["model_version_id"])
        evaluation = wait_until(
            lambda: Job.objects.filter(kind=Job.Kind.MODEL_EVALUATE, state__in=FINISHED).first(),
            timeout=300,
            what="the cross-validation job",
        )
        self.assertEqual(evaluation.state, Job.State.SUCCEEDED, evaluation.error)
        version.refresh_from_db()
        return version, evaluation

    def test_review_uses_no_image_the_version_trained_on_unless_asked(self):
        images = confirmed_images_make(18, patients=9)
        pending = image_make(seed=4242)  # predicted, never trained on
        version, evaluation = self._retrain()

        # Trained on all confirmed images: no 10 % lost to a hold-out.
        self.assertEqual(version.metrics["n_train"], len(images))
        self.assertEqual(
            model_version_training_sha256(version=version), {image.sha256 for image in images}
        )
        flags = dict(version.predictions.values_list("image_id", "in_training"))
        self.assertEqual(flags, {**{image.pk: True for image in images}, pending.pk: False})
        self.assertIsNotNone(version.trained_at)
        self.assertLessEqual(version.created_at, version.trained_at)

        # The pending image is confirmed after training: the only honest comparison there is.
        Image.objects.filter(pk=pending.pk).update(
            grading_state=Image.GradingState.CONFIRMED,
            confirmed_grade=GradeLevel.objects.get(value=2),
            confirmed_at=timezone.now(),
        )
        self.client.force_login(self.rita)
        page = self.client.get(reverse("review"), {"version": version.pk})
        self.assertEqual(page.context["report"]["n"], 1)
        self.assertEqual(page.context["not_compared"]["training"], len(images))
        shown = [row.image_id for row in page.context["page"].object_list]
        self.assertEqual(shown, [pending.pk])
        optimistic = self.client.get(
            reverse("review"), {"version": version.pk, "include_training": "on"}
        )
        self.assertEqual(optimistic.context["report"]["n"], len(images) + 1)
        self.assertContains(optimistic, "Optimistic")

        # The second stage: out-of-fold figures over exactly the training set, with intervals.
        self.assertEqual(evaluation.model_version, version)
        self.assertEqual(version.metrics["evaluation"], "done")
        cv = version.metrics["cv"]
        self.assertEqual((cv["n"], cv["folds"]), (len(images), 3))
        self.assertEqual(cv["pooled"]["n"], len(images))
        low, high = cv["intervals"]["qwk"]
        self.assertLessEqual(low, cv["pooled"]["qwk"] + 1e-9)
        self.assertGreaterEqual(high, cv["pooled"]["qwk"] - 1e-9)
        self.assertIsNotNone(version.metrics["ece"])
        self.assertTrue((Path(version.artifact_path) / "confusion.png").is_file())
        oof = np.load(Path(version.artifact_path) / OOF_FILE)
        self.assertEqual(set(oof["sha256"].tolist()), {image.sha256 for image in images})
        self.assertEqual(oof["probabilities"].shape, (len(images), 5))
        # Out-of-fold, not the released model's own (optimistic) predictions of its training set.
        released = dict(
            Prediction.objects.filter(model_version=version).values_list(
                "image__sha256", "probabilities"
            )
        )
        differs = [
            not np.allclose(row, released[sha], atol=1e-6)
            for sha, row in zip(oof["sha256"].tolist(), oof["probabilities"], strict=True)
        ]
        self.assertTrue(all(differs))
