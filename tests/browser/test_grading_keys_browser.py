"""The grading page's keyboard in headless Chromium: Enter saves after the mouse clicked a view
button, and the help lists every key the page binds, C (activation map) included."""

from __future__ import annotations

import datetime as dt

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

from grading.models import Grade
from tests.browser.base import BrowserTestCase
from tests.browser.test_grading_browser import photograph_make
from tests.factories import patient_make
from tests.factories_grading import (
    MigrationDataKeptMixin,
    model_version_active_make,
    prediction_make,
)


@pytest.mark.browser
@pytest.mark.slow
class GradingKeysBrowserTests(MigrationDataKeptMixin, BrowserTestCase):
    def press(self, *keys: str) -> None:
        ActionChains(self.driver).send_keys(*keys).perform()

    def open_grade_page(self):
        version = model_version_active_make("mobilenet-2026-11")
        image = photograph_make(0, patient_make("P-00042"), "R", dt.date(2026, 10, 14))
        prediction_make(
            image=image, version=version, probabilities=[0.1, 0.6, 0.2, 0.05, 0.05], with_cam=True
        )
        self.login(self.alice)
        self.driver.get(self.live_server_url + f"/grade/{image.pk}/")
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-grade-form]")))
        return image

    def test_it_saves_with_enter_after_a_view_button_was_clicked(self):
        image = self.open_grade_page()
        self.driver.find_element(By.CSS_SELECTOR, "[data-view-mode=red_free]").click()
        self.driver.find_element(By.CSS_SELECTOR, "[data-zoom-in]").click()
        focused = self.driver.switch_to.active_element
        self.assertEqual(focused.get_attribute("data-zoom-in"), "")  # the focus stayed on a button
        self.press("2")
        self.press(Keys.ENTER)
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-saved-grade]")))
        self.assertEqual(Grade.objects.get(image=image, grader=self.alice).grade_id, 2)

        # After saving, clicking a view button and pressing Enter moves on (nothing left: worklist).
        self.driver.find_element(By.CSS_SELECTOR, "[data-view-mode=cropped]").click()
        self.press(Keys.ENTER)
        self.wait_for(lambda d: d.current_url.endswith("/worklist/"))

    def test_the_help_lists_every_bound_key_and_c_shows_the_activation_map(self):
        self.open_grade_page()
        table = self.driver.execute_script(
            "return JSON.parse(document.getElementById('keyboard-bindings').textContent)"
        )
        help_rows = self.driver.find_elements(By.CSS_SELECTOR, "[data-keyboard-help] dt")
        self.assertEqual(len(help_rows), len(table))
        self.driver.find_element(By.CSS_SELECTOR, "[data-keyboard-help] summary").click()
        labels = [row.text for row in help_rows]
        self.assertIn("C", labels)
        self.assertIn("0–4", labels)
        self.screenshot("grading-keyboard-help")

        # C does what the help says once the model's proposal is shown (after saving).
        self.press("1")
        self.press(Keys.ENTER)
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-saved-grade]")))
        self.press("c")
        self.wait_for(
            lambda d: d.execute_script(
                "return document.querySelector('[data-cam-toggle]').checked &&"
                " document.querySelector('[data-image]').src.includes('/cam')"
            )
        )
        self.press("c")
        self.wait_for(
            lambda d: (
                not d.execute_script("return document.querySelector('[data-cam-toggle]').checked")
            )
        )

    def test_a_view_still_loading_is_shown_as_loading(self):
        self.open_grade_page()
        self.wait_for(
            lambda d: d.execute_script("return document.querySelector('[data-image]').complete")
        )
        # Slow the network down so the view takes a second to arrive, whatever the machine.
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 1500, "downloadThroughput": -1, "uploadThroughput": -1},
        )
        self.addCleanup(
            self.driver.execute_cdp_cmd,
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )
        self.driver.find_element(By.CSS_SELECTOR, "[data-view-mode=ben_graham]").click()
        stage = self.driver.find_element(By.CSS_SELECTOR, "[data-stage]")
        self.wait_for(lambda d: "loading" in stage.get_attribute("class"), timeout=3)
        status = self.driver.find_element(By.CSS_SELECTOR, "[data-viewer-status]")
        self.assertEqual(status.text, "Loading the Ben Graham view…")
        self.assertEqual(stage.get_attribute("aria-busy"), "true")
        self.screenshot("grading-view-loading")
        self.wait_for(lambda d: "loading" not in stage.get_attribute("class"), timeout=15)
        self.assertFalse(status.is_displayed())

    def test_a_key_added_to_the_table_works_and_is_listed_without_new_javascript(self):
        from grading import keyboard

        added = keyboard.KeyBinding(
            ("q",),
            "click",
            "choose grade 3 (test key)",
            target='[data-grade-key="3"]',
            labels=("Q",),
        )
        keyboard.KEY_BINDINGS.append(added)
        self.addCleanup(keyboard.KEY_BINDINGS.remove, added)
        self.open_grade_page()
        labels = [
            row.get_attribute("textContent")
            for row in self.driver.find_elements(By.CSS_SELECTOR, "[data-keyboard-help] dt")
        ]
        self.assertIn("Q", labels)
        self.press("q")
        self.assertTrue(
            self.driver.execute_script(
                "return document.querySelector('[data-grade-key=\"3\"]').checked"
            )
        )
