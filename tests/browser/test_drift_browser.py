"""A reviewer opens the model drift page after a camera started failing this week: the alert
names the week and the measure, and earlier weeks read stable. Screenshot: drift.png (copied to
docs/screenshots/ for the README)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.cache import cache
from django.utils import timezone
from selenium.webdriver.common.by import By

from grading.models import Image, ModelVersion
from tests.browser.base import BrowserTestCase
from tests.conftest import FUNDUS_DATASET_DIR
from tests.factories_drift import dataset_photos, failing_camera, photo_store, predictions_make
from tests.factories_grading import MigrationDataKeptMixin

REFERENCE = 50
BATCH = 30


@pytest.mark.browser
@pytest.mark.slow
class DriftBrowserTests(MigrationDataKeptMixin, BrowserTestCase):
    def setUp(self):
        super().setUp()
        cache.clear()  # the training-set sample is cached per version id and size
        if not FUNDUS_DATASET_DIR.is_dir():
            self.skipTest(f"graded fundus dataset not found at {FUNDUS_DATASET_DIR}")
        version = ModelVersion.objects.create(
            name="v7", state=ModelVersion.State.ACTIVE, class_values=[0, 1, 2, 3, 4]
        )
        photos = dataset_photos(FUNDUS_DATASET_DIR, start=0, count=REFERENCE)
        training = [(photo_store(p, confirmed=True), int(p.parent.name)) for p in photos]
        predictions_make(training, version=version, in_training=True)
        for weeks_ago, transform in ((2, None), (1, None), (0, failing_camera)):
            start = REFERENCE + BATCH * (2 - weeks_ago)
            photos = dataset_photos(FUNDUS_DATASET_DIR, start=start, count=BATCH)
            batch = [
                (photo_store(p, transform=transform, confirmed=weeks_ago > 0), int(p.parent.name))
                for p in photos
            ]
            predictions_make(batch, version=version, in_training=False)
            uploaded = timezone.now() - dt.timedelta(weeks=weeks_ago)
            Image.objects.filter(pk__in=[image.pk for image, _ in batch]).update(
                uploaded_at=uploaded
            )

    def test_the_drift_page_shows_this_weeks_alert(self):
        self.login(self.rita)
        self.driver.get(self.live_server_url + "/drift")
        self.wait_for(lambda d: d.find_elements(By.ID, "drift-table"))
        alert = self.driver.find_element(By.ID, "drift-alert").text
        self.assertIn("Quality score", alert)
        rows = self.driver.find_elements(By.CSS_SELECTOR, "#drift-table tbody tr")
        self.assertEqual(len(rows), 3)
        self.assertIn("alert-row", rows[0].get_attribute("class"))
        self.assertNotIn("alert-row", rows[1].get_attribute("class") or "")
        self.screenshot("drift")
