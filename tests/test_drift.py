"""Model drift: a shifted batch (a failing camera's darker, blurred photographs) raises the alert
on the drift page and the admin home; a fresh sample of the training distribution raises none."""

from __future__ import annotations

import numpy as np
from django.core.cache import cache
from django.test import SimpleTestCase
from django.urls import reverse

from grading.models import ModelVersion
from grading.selectors.drift import drift_report
from mlcore.evaluation.drift import population_stability_index, wilson_interval
from tests.conftest import FUNDUS_DATASET_DIR
from tests.factories_drift import dataset_photos, failing_camera, photo_store, predictions_make
from tests.factories_grading import GradingTestCase

REFERENCE_IMAGES = 50
BATCH = 30


class PsiTests(SimpleTestCase):
    def test_it_is_near_zero_for_the_same_distribution_and_large_for_a_shift(self):
        rng = np.random.default_rng(1)
        reference = rng.normal(0, 1, 2000)
        same = population_stability_index(reference, rng.normal(0, 1, 500))
        shifted = population_stability_index(reference, rng.normal(1.5, 1, 500))
        self.assertLess(same.value, 0.05)
        self.assertGreater(shifted.value, 1.0)
        self.assertLessEqual(shifted.low, shifted.value)
        self.assertGreaterEqual(shifted.high, shifted.value)
        self.assertGreater(shifted.low, 0.25)

    def test_categories_and_empty_input(self):
        psi = population_stability_index([0, 0, 1, 2], [2, 2, 2, 2], categorical=True)
        self.assertGreater(psi.value, 1.0)
        with self.assertRaisesMessage(ValueError, "non-empty"):
            population_stability_index([], [1.0])

    def test_wilson_interval(self):
        low, high = wilson_interval(8, 10)
        self.assertTrue(0.4 < low < 0.8 < high < 1.0)
        self.assertEqual(wilson_interval(0, 0), (0.0, 1.0))


class DriftTests(GradingTestCase):
    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        if not FUNDUS_DATASET_DIR.is_dir():
            return
        cls.version = ModelVersion.objects.create(
            name="v-drift", state=ModelVersion.State.ACTIVE, class_values=[0, 1, 2, 3, 4]
        )
        photos = dataset_photos(FUNDUS_DATASET_DIR, start=0, count=REFERENCE_IMAGES)
        training = [(photo_store(p, confirmed=True), int(p.parent.name)) for p in photos]
        predictions_make(training, version=cls.version, in_training=True)

    def setUp(self):
        if not FUNDUS_DATASET_DIR.is_dir():
            self.skipTest(f"graded fundus dataset not found at {FUNDUS_DATASET_DIR}")
        cache.clear()

    def arrive(self, *, start: int, transform=None, confirmed: bool = False) -> None:
        photos = dataset_photos(FUNDUS_DATASET_DIR, start=start, count=BATCH)
        batch = [
            (photo_store(p, transform=transform, confirmed=confirmed), int(p.parent.name))
            for p in photos
        ]
        predictions_make(batch, version=self.version, in_training=False)

    def test_a_shifted_batch_raises_the_alert(self):
        self.arrive(start=REFERENCE_IMAGES, transform=failing_camera)
        week = drift_report().latest
        assert week is not None
        self.assertEqual(week.images, BATCH)
        self.assertIn("Quality score", week.alerts)
        self.assertGreater(week.psi["quality"].low, 0.25)
        self.login(self.adam)
        home = self.client.get(reverse("home"))
        self.assertContains(home, 'id="home-drift-alert"')
        self.assertContains(home, "Quality score")
        page = self.client.get(reverse("drift"))
        self.assertContains(page, 'id="drift-alert"')
        metrics = self.client.get(reverse("metrics")).content.decode()
        self.assertIn("fundus_drift_alert 1.0", metrics)
        self.assertIn('fundus_drift_psi{bound="low",measure="quality"}', metrics)

    def test_a_fresh_sample_of_the_training_distribution_raises_none(self):
        self.arrive(start=REFERENCE_IMAGES + BATCH, confirmed=True)
        report = drift_report()
        week = report.latest
        assert week is not None
        self.assertEqual(report.reference_images, REFERENCE_IMAGES)
        self.assertEqual(week.alerts, [], week.psi)
        # Agreement with confirmed grades, on the batch's images it never trained on only.
        self.assertEqual(week.confirmed, BATCH)
        assert week.agreement is not None
        self.assertTrue(week.agreement_low <= week.agreement <= week.agreement_high)
        self.login(self.adam)
        home = self.client.get(reverse("home"))
        self.assertNotContains(home, 'id="home-drift-alert"')
        self.assertContains(home, 'id="home-drift-ok"')
        self.assertContains(self.client.get(reverse("drift")), 'id="drift-ok"')

    def test_only_reviewers_and_admins_see_the_drift_page(self):
        self.assertStatusByUser(reverse("drift"), alice=403, nora=403, rita=200, adam=200)
