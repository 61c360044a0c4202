"""A reviewer opens the review page, filters to disagreements and follows a row to the image."""

from __future__ import annotations

import pytest

from grading.models import Grade, Image, ModelVersion, Patient
from tests.browser.base import BrowserTestCase
from tests.factories import image_make, patient_make
from tests.factories_review import (
    at,
    grade_correct,
    grade_make,
    image_confirm,
    model_version_make,
    prediction_make,
    probabilities_for,
)

# (confirmed, predicted by the active version) for a month of images; two are off by >= 2 grades.
PAIRS = [(0, 0), (0, 0), (0, 1), (1, 1), (1, 0), (2, 2), (2, 4), (2, 2), (3, 3), (3, 2)]
PAIRS += [(4, 4), (0, 0), (1, 1), (2, 2), (0, 2), (4, 3), (1, 1), (0, 0)]


@pytest.mark.browser
@pytest.mark.slow
class ReviewBrowserTests(BrowserTestCase):
    def setUp(self):
        super().setUp()
        old = model_version_make("2025-01-baseline", state=ModelVersion.State.RETIRED)
        active = model_version_make("2025-03-retrain", state=ModelVersion.State.ACTIVE)
        self.far_off: list[int] = []
        for i, (confirmed, predicted) in enumerate(PAIRS):
            image = image_make(
                patient=Patient.objects.get_or_create(pseudonym=f"P{i // 2 + 1:03d}")[0],
                eye=Image.Eye.LEFT if i % 2 else Image.Eye.RIGHT,
                confirmed_grade=confirmed,
            )
            month = 1 + i % 3
            Image.objects.filter(pk=image.pk).update(uploaded_at=at(3 + i, month=month))
            prediction_make(
                image=image,
                model_version=old,
                grade=min(4, predicted + (i % 2)),
                created=at(20, month=month),
            )
            prediction_make(
                image=image,
                model_version=active,
                grade=predicted,
                probabilities=probabilities_for(predicted, confidence=0.55 + 0.02 * i),
                created=at(25, month=3),
            )
            if abs(confirmed - predicted) >= 2:
                self.far_off.append(image.pk)
            # Quality-assurance regrading of imported images, for the grader table.
            grade_make(image=image, grader=self.alice, value=confirmed, created=at(26, month=3))
            bobs = min(4, confirmed + 1) if i % 4 == 0 else confirmed
            grade_make(image=image, grader=self.bob, value=bobs, created=at(27, month=3))
        # One image with a full clinical history: two graders, a correction, an adjudication.
        story = image_make(patient=patient_make("P100"), eye=Image.Eye.LEFT)
        Image.objects.filter(pk=story.pk).update(uploaded_at=at(4, 8))
        first = grade_make(image=story, grader=self.alice, value=3, created=at(4, 9))
        grade_correct(first, value=2, notes="On review: no venous beading.", created=at(4, 10))
        grade_make(image=story, grader=self.bob, value=4, created=at(4, 11))
        prediction_make(image=story, model_version=old, grade=3, created=at(4, 12))
        grade_make(
            image=story,
            grader=self.rita,
            value=2,
            kind=Grade.Kind.ADJUDICATION,
            notes="Moderate NPDR; new vessels not confirmed.",
            created=at(5, 9),
        )
        image_confirm(
            image=story, method=Image.ConfirmationMethod.ADJUDICATION, value=2, by=self.rita,
            when=at(5, 9),
        )  # fmt: skip
        prediction_make(
            image=story,
            model_version=active,
            grade=4,
            probabilities=[0.02, 0.05, 0.3, 0.13, 0.5],
            created=at(25, month=3),
        )
        self.story = story
        self.far_off.append(story.pk)
        self.compared = len(PAIRS) + 1

    def full_page_screenshot(self, name: str) -> None:
        """The whole page, not just the first screen, for the README."""
        self.wait_for(
            lambda d: d.execute_script(
                "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
            )
        )
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        # The window includes browser chrome that the headless viewport loses: add a margin.
        self.driver.set_window_size(1366, min(int(height) + 160, 5000))
        try:
            self.screenshot(name)
        finally:
            self.driver.set_window_size(1366, 900)

    def test_it_filters_to_disagreements_and_opens_an_image(self):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        driver = self.driver
        self.login(self.rita)
        driver.get(self.live_server_url + "/review/")
        self.wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, "table.review-table tbody tr"))
        rows = driver.find_elements(By.CSS_SELECTOR, "table.review-table tbody tr")
        self.assertEqual(len(rows), self.compared)
        self.assertIn("Quadratic weighted kappa", driver.page_source)
        self.full_page_screenshot("review-page")

        # htmx swaps the results in on change; the plain form would do the same on submit.
        Select(driver.find_element(By.ID, "id_disagreement")).select_by_value("2")
        self.wait_for(
            lambda d: (
                len(d.find_elements(By.CSS_SELECTOR, "table.review-table tbody tr"))
                == len(self.far_off)
            )
        )
        self.assertIn("disagreement=2", driver.current_url)
        shown = {
            int(row.get_attribute("data-image"))
            for row in driver.find_elements(By.CSS_SELECTOR, "table.review-table tbody tr")
        }
        self.assertEqual(shown, set(self.far_off))
        self.full_page_screenshot("review-page-disagreements")

        link = driver.find_element(
            By.CSS_SELECTOR, f'tr[data-image="{self.story.pk}"] a.image-link'
        )
        link.click()
        self.wait_for(lambda d: d.current_url.endswith(f"/images/{self.story.pk}/"))
        self.wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, "ol.timeline"))
        body = driver.find_element(By.TAG_NAME, "body").text
        self.assertIn("adjudication of the graders' disagreement", body)
        self.assertIn("Superseded by grade", body)
        self.assertIn("On review: no venous beading.", body)
        self.full_page_screenshot("review-image-timeline")

        # The same filter as a plain GET (bookmarks, no JavaScript), then the grader table.
        driver.get(self.live_server_url + "/review/?disagreement=2&sort=image")
        rows = driver.find_elements(By.CSS_SELECTOR, "table.review-table tbody tr")
        self.assertEqual(len(rows), len(self.far_off))
        driver.get(self.live_server_url + "/review/graders/")
        self.wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, "table.grader-table"))
        self.full_page_screenshot("review-graders")
