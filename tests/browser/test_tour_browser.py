"""The README's first-hour tour in headless Chromium at 1400x1000: an admin's home (active model,
a running job, alerts), the way to the registry, then a clinician's home, Start grading, a grade
saved with the keyboard and the model's proposal beside it. Screenshots: test-artifacts/
screenshots/tour-*.png (the README's come from this test, on small test data)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

from grading.models import Grade, Job, ModelVersion
from tests.browser.base import BrowserTestCase
from tests.browser.test_grading_browser import photograph_make
from tests.factories import patient_make
from tests.factories_grading import MigrationDataKeptMixin, prediction_make, workbench_set
from tests.factories_jobs import model_version_make

# Test data for the screenshots: not a measurement of any model.
HOLDOUT = {
    "holdout": {
        "n": 279,
        "qwk": 0.81,
        "accuracy": 0.70,
        "referable": {"sensitivity": 0.92, "specificity": 0.88, "auc": 0.96},
    }
}


@pytest.mark.browser
@pytest.mark.slow
class TourBrowserTests(MigrationDataKeptMixin, BrowserTestCase):
    def setUp(self):
        super().setUp()
        self.driver.set_window_size(1400, 1000)
        self.addCleanup(self.driver.set_window_size, 1366, 900)

    def test_the_first_hour_tour(self):
        version = model_version_make(
            "v1", state=ModelVersion.State.ACTIVE, metrics=HOLDOUT, activated_at=timezone.now()
        )
        Job.objects.create(
            kind=Job.Kind.MODEL_TRAIN,
            state=Job.State.RUNNING,
            progress=46,
            message="Features: 1,282 of 2,787 images",
            started_at=timezone.now(),
        )
        Job.objects.create(
            kind=Job.Kind.PREDICTIONS_REFRESH,
            state=Job.State.FAILED,
            error="OSError: [Errno 28] No space left on device\nTraceback ...",
        )
        workbench_set(grades_required=1)
        patient = patient_make("P-00042")
        day = dt.date(2026, 11, 2)
        photograph_make(5, patient, "L", day, grade=1)
        images = [
            photograph_make(0, patient, "R", day),
            photograph_make(1, patient_make("P-00108"), "L", day),
        ]
        for image in images:
            prediction_make(
                image=image, version=version, probabilities=[0.05, 0.15, 0.6, 0.15, 0.05]
            )

        # 1. The admin's home: the active model's figures, the running job, the alerts.
        self.login(self.adam)
        self.wait_for(EC.presence_of_element_located((By.ID, "home-admin")))
        page = self.driver.page_source
        self.assertIn("Measured on 279 images", page)
        self.assertIn("No space left on device", page)
        self.assertIn('aria-valuenow="46"', page)
        self.screenshot("tour-home-admin")
        # The running job's card follows its progress without a reload.
        Job.objects.filter(state=Job.State.RUNNING).update(progress=80, message="Head: epoch 12")
        self.wait_for(
            lambda d: (
                'aria-valuenow="80"'
                in d.find_element(By.ID, "home-jobs").get_attribute("innerHTML")
            ),
            timeout=10,
        )
        self.driver.find_element(By.LINK_TEXT, "Model registry").click()
        self.wait_for(lambda d: d.current_url.endswith("/models/"))

        # 2. A clinician's home leads to the worklist; Start grading opens the oldest image.
        self.login(self.alice)
        start = self.wait_for(EC.element_to_be_clickable((By.CSS_SELECTOR, "[data-start-grading]")))
        self.assertIn("2", self.driver.find_element(By.CSS_SELECTOR, "[data-waiting-for-me]").text)
        self.screenshot("tour-home-clinician")
        start.click()
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-grade-form]")))
        self.assertIn(f"/grade/{images[0].pk}/", self.driver.current_url)

        # 3. Grade with the keyboard; the model's proposal appears once the grade is saved.
        self.driver.find_element(By.CSS_SELECTOR, "[data-keyboard-help] summary").click()
        ActionChains(self.driver).send_keys("2").perform()
        self.driver.execute_script(
            "document.querySelector('[data-keyboard-help]').scrollIntoView({block: 'end'})"
        )
        self.screenshot("tour-grade-keys")
        ActionChains(self.driver).send_keys(Keys.ENTER).perform()
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-saved-grade]")))
        self.assertIn("Predicts", self.driver.page_source)
        self.screenshot("tour-grade-saved")
        self.assertEqual(Grade.objects.get(image=images[0], grader=self.alice).grade_id, 2)
