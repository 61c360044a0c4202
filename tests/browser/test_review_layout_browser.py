"""The review page at 1400 px in headless Chromium: the table stays inside its card, every filter
shows its whole text, each version is listed once, and a filter change shows that it is loading."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from grading.models import ModelVersion, Patient
from tests.browser.base import BrowserTestCase
from tests.factories import image_make
from tests.factories_grading import MigrationDataKeptMixin
from tests.factories_review import at, model_version_make, prediction_make, probabilities_for

PAIRS = [(0, 0), (0, 1), (1, 1), (2, 2), (2, 4), (3, 3), (3, 2), (4, 4), (0, 2), (1, 0)] * 3

# The width of the text a <select> shows, against the room it has (its width less padding and
# the arrow): a select cannot report its own overflow.
SELECT_TEXT_FITS = """
const select = arguments[0];
const style = getComputedStyle(select);
const canvas = document.createElement("canvas").getContext("2d");
canvas.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
const text = select.options[select.selectedIndex].text;
const room = select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - 18;
return [text, canvas.measureText(text).width, room];
"""


@pytest.mark.browser
@pytest.mark.slow
class ReviewLayoutBrowserTests(MigrationDataKeptMixin, BrowserTestCase):
    def setUp(self):
        super().setUp()
        active = model_version_make("v1", state=ModelVersion.State.ACTIVE)
        for i, (confirmed, predicted) in enumerate(PAIRS):
            image = image_make(
                # The demo import's pseudonyms: "img-" and 16 hex digits, the longest in practice.
                patient=Patient.objects.get_or_create(pseudonym=f"img-{i // 2 + 1:016x}")[0],
                confirmed_grade=confirmed,
            )
            prediction_make(
                image=image,
                model_version=active,
                grade=predicted,
                probabilities=probabilities_for(predicted, confidence=0.6),
                created=at(12, month=11),
            )
        self.driver.set_window_size(1400, 1000)
        self.addCleanup(self.driver.set_window_size, 1366, 900)

    def test_the_page_fits_and_says_when_it_is_loading(self):
        self.login(self.rita)
        self.driver.get(self.live_server_url + "/review/")
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, ".review-table")))

        version = Select(self.driver.find_element(By.ID, "id_version"))
        self.assertEqual([o.text for o in version.options], ["v1 (active)"])
        self.assertEqual(version.first_selected_option.text, "v1 (active)")

        overflow = self.driver.execute_script(
            "const card = document.querySelector('.review-table').closest('.card');"
            "return [card.scrollWidth, card.clientWidth];"
        )
        self.assertLessEqual(overflow[0], overflow[1], "the table overflows its card")

        Select(self.driver.find_element(By.ID, "id_disagreement")).select_by_value("2")
        self.wait_for(lambda d: "disagreement=2" in d.current_url)
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, ".review-table")))
        for select in self.driver.find_elements(By.CSS_SELECTOR, "#review-filters select"):
            text, width, room = self.driver.execute_script(SELECT_TEXT_FITS, select)
            self.assertLessEqual(width, room, f"{select.get_attribute('id')}: {text!r} is cut off")

        self.wait_for(
            lambda d: d.execute_script(
                "const img = document.querySelector('figure.confusion img');"
                "return img && img.complete && img.naturalWidth > 0;"
            )
        )
        self.driver.execute_script("window.scrollTo(0, 0)")
        self.screenshot("review-page")

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
        Select(self.driver.find_element(By.ID, "id_disagreement")).select_by_value("0")
        indicator = self.driver.find_element(By.CSS_SELECTOR, "[data-review-loading]")
        self.wait_for(lambda d: indicator.is_displayed(), timeout=3)
        self.assertIn("Updating", indicator.text)
        self.screenshot("review-loading")
        self.wait_for(lambda d: not indicator.is_displayed(), timeout=20)
