"""The grading protocol in headless Chromium: findings ticked by keyboard change the derived grade
live, an override needs a reason; screenshots of the rubric, certification and the quality queue
go to test-artifacts/screenshots/protocol-*.png."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

from grading.models import Grade
from grading.services.certification import certification_set_build
from tests.browser.base import BrowserTestCase
from tests.browser.test_grading_browser import photograph_make
from tests.factories import patient_make
from tests.factories_grading import MigrationDataKeptMixin


@pytest.mark.browser
@pytest.mark.slow
class ProtocolBrowserTests(MigrationDataKeptMixin, BrowserTestCase):
    def press(self, *keys: str) -> None:
        ActionChains(self.driver).send_keys(*keys).perform()

    def derived(self) -> str:
        return self.driver.find_element(By.CSS_SELECTOR, "[data-derived-grade]").text

    def checked_grade(self) -> str | None:
        checked = self.driver.find_elements(By.CSS_SELECTOR, "[data-grade-key]:checked")
        return checked[0].get_attribute("value") if checked else None

    def test_it_derives_the_grade_live_as_findings_are_ticked(self):
        import datetime as dt

        image = photograph_make(0, patient_make("P-00777"), "R", dt.date(2026, 10, 1))
        self.login(self.alice)
        self.driver.get(self.live_server_url + f"/grade/{image.pk}/")
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-rubric]")))
        self.assertIn("No DR", self.derived())

        self.press("a")  # microaneurysms
        self.wait_for(lambda d: "Mild" in self.derived())
        self.assertEqual(self.checked_grade(), "1")
        self.press("h", "1")  # haemorrhages, superotemporal: present
        self.wait_for(lambda d: "Moderate" in self.derived())
        self.assertEqual(self.checked_grade(), "2")
        self.press("b", "1")  # venous beading ST ...
        self.assertIn("Moderate", self.derived())
        self.press("b", "3")  # ... and IT: two quadrants, the 4-2-1 rule
        self.wait_for(lambda d: "Severe" in self.derived())
        self.assertIn("venous beading in 2", self.driver.page_source)
        self.assertEqual(self.checked_grade(), "3")
        self.screenshot("protocol-rubric")
        self.press("d")  # new vessels at the disc
        self.wait_for(lambda d: "PDR" in self.derived())
        self.assertEqual(self.checked_grade(), "4")

        # Recording another grade than the findings give needs a reason.
        self.press("3")
        override = self.driver.find_element(By.CSS_SELECTOR, "[data-override]")
        self.assertTrue(override.is_displayed())
        self.press(Keys.ENTER)
        self.wait_for(
            lambda d: "give a reason" in d.find_element(By.CSS_SELECTOR, "[data-key-hint]").text
        )
        self.assertFalse(Grade.objects.filter(image=image).exists())
        self.driver.switch_to.active_element.send_keys("NVD doubtful: fine disc vessels")
        self.driver.find_element(By.CSS_SELECTOR, "[data-submit]").click()
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-saved-grade]")))
        grade = Grade.objects.get(image=image)
        self.assertEqual((grade.grade_id, grade.derived_grade_id), (3, 4))
        self.assertEqual(grade.findings["venous_beading"], ["ST", "IT"])
        self.assertEqual(grade.override_reason, "NVD doubtful: fine disc vessels")

    def test_a_new_clinician_starts_on_the_certification_set(self):
        import datetime as dt

        for index, grade in enumerate((0, 2, 4)):
            photograph_make(index, patient_make(f"P-0090{index}"), "L", dt.date(2026, 9, 1), grade)
        certification_set_build(size=3)
        self.login(self.alice)
        self.driver.get(self.live_server_url + "/worklist/")
        self.wait_for(
            EC.presence_of_element_located((By.CSS_SELECTOR, "[data-certification-card]"))
        )
        self.screenshot("protocol-worklist-certification")
        self.driver.find_element(By.CSS_SELECTOR, ".next-cta button").click()
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-certification]")))
        self.assertNotIn("data-reference-grade", self.driver.page_source)
        self.press("0", Keys.ENTER)
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-reference-grade]")))
        self.screenshot("protocol-certification-grade")
        for _ in range(2):
            self.press(Keys.ENTER)  # on to the next certification image
            self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-certification]")))
            self.wait_for(lambda d: "data-reference-grade" not in d.page_source)
            self.press("2", Keys.ENTER)
            self.wait_for(
                EC.presence_of_element_located((By.CSS_SELECTOR, "[data-reference-grade]"))
            )
        self.login(self.adam)
        self.driver.get(self.live_server_url + "/certification/")
        self.wait_for(
            EC.presence_of_element_located((By.CSS_SELECTOR, "[data-certification-results]"))
        )
        self.assertIn("alice", self.driver.page_source)
        self.screenshot("protocol-certification-results")

    def test_the_quality_queue_lists_a_blurred_upload(self):
        import io

        import PIL.Image
        from django.test import override_settings

        from grading.services.images import image_create, image_validate
        from mlcore.data.quality import degraded_copy
        from tests.browser.test_grading_browser import photograph_bytes

        photo = PIL.Image.open(io.BytesIO(photograph_bytes(3)))
        buffer = io.BytesIO()
        degraded_copy(photo, "blurred").save(buffer, format="JPEG", quality=90)
        with override_settings(FUNDUS_QUALITY_GATE=True):
            image_create(
                validated=image_validate(data=buffer.getvalue()), patient=patient_make("P-00321")
            )
        self.login(self.alice)
        self.driver.get(self.live_server_url + "/quality/")
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-quality-queue]")))
        self.wait_for(
            lambda d: d.execute_script(
                "const img = document.querySelector('[data-quality-queue] img');"
                "return img.complete && img.naturalWidth > 0;"
            ),
            timeout=30,
        )
        self.screenshot("protocol-quality-queue")
