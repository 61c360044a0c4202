"""A retrain predicts the images whose features are cached straight from the feature store, in one
batch, and gets exactly what the file pipeline gets."""

from __future__ import annotations

import numpy as np
from django.conf import settings
from django.test import TransactionTestCase

from grading.models import GradeLevel, Image, Job, Prediction
from grading.services.images import image_create, image_validate
from grading.services.model_training import model_train
from grading.services.predictions import model_artifact_load
from mlcore.features.store import feature_key
from mlcore.pipelines.predict import predict_from_store, predict_images
from tests.conftest import FUNDUS_DATASET_DIR
from tests.factories import image_make, patient_make, user_make
from tests.factories_jobs import TrainingMixin


class CachedPredictionTests(TrainingMixin, TransactionTestCase):
    tmp_prefix = "funduscope-cached-predictions-"
    embedded_worker = False

    def test_a_retrain_predicts_cached_images_from_the_store_like_the_pipeline(self):
        adam = user_make("adam", "admin")
        # Real (Gaussian-filtered) photographs: the model's own domain, read from the cache.
        photos = sorted(FUNDUS_DATASET_DIR.glob("[02]/*.*"))
        if not photos:
            self.skipTest(f"graded fundus dataset not found at {FUNDUS_DATASET_DIR}")
        levels = {level.value: level for level in GradeLevel.objects.all()}
        people = [patient_make() for _ in range(8)]
        for index, photo in enumerate([*photos[:8], *photos[-8:]]):
            image_create(
                validated=image_validate(data=photo.read_bytes()),
                patient=people[index % 8],
                confirmed_grade=levels[int(photo.parent.name)],
                import_source="import:test",
            )
        pending = image_make(seed=91)  # not trained on (and a synthetic raw photograph)
        job = Job.objects.create(
            kind=Job.Kind.MODEL_TRAIN, state=Job.State.RUNNING, created_by=adam
        )
        messages: list[str] = []
        version = model_train(
            job=job, progress=lambda percent, message="": messages.append(message)
        )

        self.assertEqual(
            Prediction.objects.filter(model_version=version).count(), Image.objects.count()
        )
        self.assertTrue(any("from cached features" in m for m in messages), messages)
        self.assertFalse(Prediction.objects.filter(entropy__isnull=True).exists())

        artifact = model_artifact_load(model_version=version)
        images = list(Image.objects.exclude(pk=pending.pk).order_by("id"))
        paths = [f"{settings.MEDIA_ROOT}/{image.file.name}" for image in images]
        rows, proba, grades = predict_from_store(
            artifact,
            [feature_key(image.sha256) for image in images],
            paths=paths,
            store_dir=settings.FUNDUS_FEATURE_STORE,
        )
        self.assertEqual(len(rows), 16)  # every training photograph, not the synthetic one
        from_files = predict_images(
            artifact,
            [paths[i] for i in rows],
            store_dir=settings.FUNDUS_FEATURE_STORE,
            weights_dir=settings.FUNDUS_WEIGHTS_DIR,
        )
        np.testing.assert_allclose(
            proba, [p.probabilities for p in from_files], rtol=1e-5, atol=1e-6
        )
        self.assertEqual(list(grades), [p.grade for p in from_files])
        stored = Prediction.objects.get(model_version=version, image=images[rows[0]])
        np.testing.assert_allclose(stored.probabilities, proba[0], rtol=1e-5, atol=1e-6)
