"""An admin clicks Retrain, watches the job's progress bar move, and activates the new version.

Headless Chromium against the live server, a real Celery worker (in a thread) on the test Redis
database, the real MobileNetV2 weights on ~20 tiny synthetic photographs.
"""

from __future__ import annotations

import time

import pytest
from selenium.webdriver.common.by import By

from grading.models import Job, ModelVersion
from tests.browser.base import BrowserTestCase
from tests.factories_jobs import (
    DEAD_BROKER_URL,
    BrokerMixin,
    TrainingMixin,
    confirmed_images_make,
    use_broker,
)


@pytest.mark.browser
@pytest.mark.slow
class RetrainBrowserTests(TrainingMixin, BrokerMixin, BrowserTestCase):
    tmp_prefix = "funduscope-retrain-browser-"
    train_epochs = 8

    def _progress_values_until_finished(self, job: Job, timeout: float = 240) -> list[int]:
        """What the page's progress bar showed, read every 0.1 s until the row says done."""
        seen: list[int] = []
        deadline = time.monotonic() + timeout
        screenshot_taken = False
        while time.monotonic() < deadline:
            rows = self.driver.find_elements(By.ID, f"job-{job.pk}")
            if rows:
                row = rows[0]
                try:
                    value = int(
                        row.find_element(By.CSS_SELECTOR, "progress").get_attribute("value")
                    )
                    state = row.get_attribute("data-state")
                except Exception:  # the row was swapped by htmx while we read it
                    continue
                if not seen or seen[-1] != value:
                    seen.append(value)
                if 0 < value < 100 and not screenshot_taken:
                    self.screenshot("jobs-retrain-running")
                    screenshot_taken = True
                if state in ("succeeded", "failed"):
                    return seen
            time.sleep(0.1)
        raise AssertionError(f"job {job.pk} did not finish in {timeout} s; bar showed {seen}")

    def test_retrain_shows_a_moving_progress_bar_and_the_new_version_can_be_activated(self):
        confirmed_images_make()
        self.login(self.adam)
        self.driver.get(self.live_server_url + "/models/")
        self.assertIn("No model is active yet", self.driver.page_source)
        self.driver.find_element(By.ID, "retrain-button").click()
        self.wait_for(lambda d: d.current_url.endswith("/jobs/"))
        self.assertIn("Retraining queued", self.driver.page_source)
        job = Job.objects.get(kind=Job.Kind.MODEL_TRAIN)

        seen = self._progress_values_until_finished(job)
        job.refresh_from_db()
        self.assertEqual(job.state, Job.State.SUCCEEDED, job.error)
        self.assertEqual(seen[-1], 100)
        self.assertGreaterEqual(len([v for v in seen if 0 < v < 100]), 2, f"bar showed {seen}")
        self.assertEqual(seen, sorted(seen), f"the bar only moves forward: {seen}")
        self.assertIn("candidate until an admin activates it", self.driver.page_source)
        self.screenshot("jobs")

        self.driver.get(self.live_server_url + "/models/")
        version = ModelVersion.objects.get()
        self.assertEqual(version.state, ModelVersion.State.CANDIDATE)
        self.driver.find_element(
            By.CSS_SELECTOR, f'a.activate[data-version="{version.name}"]'
        ).click()
        # Activation asks first (no version is active yet, so there is nothing to pair with).
        self.wait_for(lambda d: d.find_elements(By.ID, "confirm-activate"))
        self.screenshot("models-activate-confirm")
        self.driver.find_element(By.ID, "confirm-activate").click()
        self.wait_for(lambda d: "is now the active model" in d.page_source)
        version.refresh_from_db()
        self.assertEqual(version.state, ModelVersion.State.ACTIVE)
        badge = self.driver.find_element(By.CSS_SELECTOR, f"#version-{version.pk} .badge").text
        self.assertEqual(badge, "Active")
        self.screenshot("models")
        self.driver.get(self.live_server_url + f"/models/{version.pk}/")
        self.wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, ".plots img"))
        self.driver.execute_script("document.querySelector('.plots').scrollIntoView()")
        self.screenshot("models-detail-plots")

        # Redis down: the page still works and the button says why it cannot retrain.
        with use_broker(DEAD_BROKER_URL):
            self.driver.get(self.live_server_url + "/jobs/")
            button = self.driver.find_element(By.CSS_SELECTOR, "button.queue-unavailable")
            self.assertEqual(button.text, "Retrain: queue unavailable")
            self.assertFalse(button.is_enabled())
            self.screenshot("jobs-queue-unavailable")
