"""An admin activates a candidate and then returns to the previous version: each switch asks
first on a page that shows the paired comparison, and the rollback button says what it does.
Screenshots: models-confirm-activate.png, models-confirm-rollback.png."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from selenium.webdriver.common.by import By

from grading.models import ModelVersion
from grading.selectors.model_versions import OOF_FILE
from tests.browser.base import BrowserTestCase
from tests.factories_grading import MigrationDataKeptMixin
from tests.factories_jobs import BrokerMixin, model_version_make, redis_flush
from tests.test_model_activation import cv_metrics, patients_images_make

N_IMAGES = 150


@pytest.mark.browser
@pytest.mark.slow
class ActivationBrowserTests(MigrationDataKeptMixin, BrokerMixin, BrowserTestCase):
    def setUp(self):
        super().setUp()
        redis_flush()
        folder = Path(tempfile.mkdtemp(prefix="funduscope-activation-browser-"))
        truth = np.asarray([i % 5 for i in range(N_IMAGES)])
        images = patients_images_make(truth.tolist())
        rng = np.random.default_rng(5)
        noisy = np.where(rng.random(N_IMAGES) < 0.5, np.clip(truth + 1, 0, 4), truth)
        for name, predicted, state, qwk in (
            ("v1", noisy, ModelVersion.State.ACTIVE, 0.81),
            ("v2", truth, ModelVersion.State.CANDIDATE, 0.93),
        ):
            model_version_make(
                name,
                state=state,
                artifact_dir=folder / name,
                metrics=cv_metrics(qwk, qwk - 0.03, qwk + 0.03),
            )
            np.savez_compressed(
                folder / name / OOF_FILE,
                sha256=np.asarray([image.sha256 for image in images]),
                grade=truth,
                predicted=predicted,
                probabilities=np.eye(5)[predicted] * 0.9 + 0.02,
            )
        ModelVersion.objects.filter(name="v1").update(activated_at="2024-01-01T00:00:00Z")

    def confirm_page(self, shot: str) -> str:
        self.wait_for(lambda d: d.find_elements(By.ID, "confirm-activate"))
        self.screenshot(shot)
        verdict = self.driver.find_element(By.CSS_SELECTOR, "#paired-comparison .verdict")
        return verdict.get_attribute("data-verdict")

    def test_activation_and_rollback_ask_first_and_show_the_paired_comparison(self):
        self.login(self.adam)
        self.driver.get(self.live_server_url + "/models/")
        self.driver.find_element(By.CSS_SELECTOR, 'a.activate[data-version="v2"]').click()
        self.assertEqual(self.confirm_page("models-confirm-activate"), "better")
        self.assertIn("v2 is better than v1", self.driver.page_source)
        button = self.driver.find_element(By.ID, "confirm-activate")
        self.assertEqual(button.text, "Activate v2 (replacing v1)")
        button.click()
        self.wait_for(lambda d: "v2 is now the active model" in d.page_source)

        rollback = self.driver.find_element(By.ID, "rollback-button")
        self.assertEqual(rollback.text, "Re-activate the previously active version, v1…")
        rollback.click()
        self.assertEqual(self.confirm_page("models-confirm-rollback"), "worse")
        self.assertIn("v1 is worse than v2", self.driver.page_source)
        # A worse version takes the explicit second confirmation: the button alone does nothing.
        self.driver.find_element(By.ID, "confirm-activate").click()
        self.assertEqual(ModelVersion.objects.get(state=ModelVersion.State.ACTIVE).name, "v2")
        self.driver.find_element(By.ID, "id_accept_worse").click()
        self.driver.find_element(By.ID, "confirm-activate").click()
        self.wait_for(lambda d: "v1 is now the active model" in d.page_source)
        self.assertEqual(ModelVersion.objects.get(state=ModelVersion.State.ACTIVE).name, "v1")
        # v2 is newer than v1: the button now names it for what it does, not "Roll back to v2".
        rollback = self.driver.find_element(By.ID, "rollback-button")
        self.assertEqual(rollback.text, "Re-activate the previously active version, v2…")
