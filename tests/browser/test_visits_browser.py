"""The grading page's patient context in headless Chromium: photographs grouped by visit date, a
same-day retake of the same eye under "This visit"."""

from __future__ import annotations

import datetime as dt

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from tests.browser.base import BrowserTestCase
from tests.browser.test_grading_browser import photograph_make
from tests.factories import patient_make
from tests.factories_grading import MigrationDataKeptMixin


@pytest.mark.browser
@pytest.mark.slow
class VisitGroupingBrowserTests(MigrationDataKeptMixin, BrowserTestCase):
    def test_a_same_day_photograph_of_the_same_eye_is_in_this_visit(self):
        patient = patient_make("P-00310")
        day, earlier = dt.date(2026, 11, 2), dt.date(2025, 6, 30)
        image = photograph_make(0, patient, "R", day)
        photograph_make(1, patient, "R", day)  # a retake the same day
        photograph_make(2, patient, "L", day, grade=0)
        photograph_make(3, patient, "R", earlier, grade=1)
        photograph_make(4, patient, "L", earlier, grade=1)

        self.login(self.alice)
        self.driver.get(self.live_server_url + f"/grade/{image.pk}/")
        this_visit = self.wait_for(
            EC.presence_of_element_located((By.CSS_SELECTOR, "[data-this-visit]"))
        )
        eyes = [
            li.find_element(By.CSS_SELECTOR, ".eye").text
            for li in this_visit.find_elements(By.TAG_NAME, "li")
        ]
        self.assertEqual(eyes, ["OD", "OS"])
        visits = self.driver.find_elements(By.CSS_SELECTOR, "[data-visit]")
        self.assertEqual([v.get_attribute("data-visit") for v in visits], ["2025-06-30"])
        self.assertEqual(visits[0].find_element(By.CSS_SELECTOR, ".visit-date").text, "30 Jun 2025")
        self.assertEqual(len(visits[0].find_elements(By.TAG_NAME, "li")), 2)
        context = self.driver.find_element(By.CSS_SELECTOR, ".card.context")
        self.driver.execute_script("arguments[0].scrollIntoView()", context)
        context.screenshot(str(self.screenshot("grading-visits")))
