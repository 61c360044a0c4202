"""The grading page's model panel tells one story: the grade shown is the one the bars support.
With argmax decoding the tallest bar is the predicted grade; when a stored grade is not the most
probable one (ordinal decoding), the panel shows the expected grade and P(grade >= k) that chose
it instead of per-grade bars that would contradict it. Screenshots: grading-model-panel-*.png."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from grading.models import GradeLevel, ModelVersion, Prediction
from tests.browser.base import BrowserTestCase
from tests.factories import image_make
from tests.factories_grading import MigrationDataKeptMixin, prediction_make, workbench_set

ORDINAL_PROBABILITIES = [0.05, 0.10, 0.40, 0.30, 0.15]  # most probable: 2; expected grade 2.40
THRESHOLDS = [0.5, 1.5, 2.3, 3.4]  # 2.40 passes 2.3 (grade 3), not 3.4: the model says 3


def bar_percent(item) -> float:
    return float(item.find_element(By.CSS_SELECTOR, ".value").text.rstrip("%"))


@pytest.mark.browser
@pytest.mark.slow
class ModelPanelBrowserTests(MigrationDataKeptMixin, BrowserTestCase):
    def setUp(self):
        super().setUp()
        workbench_set(blind_first_grader=False)
        self.version = ModelVersion.objects.create(
            name="v7",
            state=ModelVersion.State.ACTIVE,
            class_values=[0, 1, 2, 3, 4],
            metrics={"decoding": "ordinal", "thresholds": THRESHOLDS},
        )

    def open_grading_page(self, image) -> None:
        self.driver.get(self.live_server_url + f"/grade/{image.pk}/")
        self.wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, ".model-panel .prediction"))
        self.driver.execute_script("document.querySelector('.model-panel').scrollIntoView()")

    def predicted_value(self) -> int:
        text = self.driver.find_element(By.CSS_SELECTOR, ".model-panel .predicted-grade").text
        return int(text.split()[0])

    def test_with_argmax_decoding_the_tallest_bar_is_the_grade_shown(self):
        image = image_make(seed=71)
        prediction_make(
            image=image, version=self.version, probabilities=[0.1, 0.15, 0.2, 0.5, 0.05]
        )
        self.login(self.alice)
        self.open_grading_page(image)
        bars = self.driver.find_elements(By.CSS_SELECTOR, ".model-panel ul.probabilities li")
        self.assertEqual(len(bars), 5)
        tallest = max(bars, key=bar_percent)
        self.assertEqual(int(tallest.get_attribute("data-grade")), self.predicted_value())
        self.assertEqual(self.predicted_value(), 3)
        self.assertIn("predicted", tallest.get_attribute("class"))
        self.assertFalse(self.driver.find_elements(By.CSS_SELECTOR, ".ordinal-explained"))
        self.screenshot("grading-model-panel-argmax")

    def test_an_ordinal_grade_is_shown_with_the_expected_grade_and_cumulative_bars(self):
        image = image_make(seed=72)
        Prediction.objects.create(
            image=image,
            model_version=self.version,
            probabilities=ORDINAL_PROBABILITIES,
            predicted_grade=GradeLevel.objects.get(value=3),
        )
        self.login(self.alice)
        self.open_grading_page(image)
        self.assertEqual(self.predicted_value(), 3)
        expected = float(self.driver.find_element(By.CSS_SELECTOR, ".expected-grade").text)
        self.assertAlmostEqual(expected, 2.40, places=2)
        # No per-grade bar says "3 at 30 %" beside a "40 %" for grade 2: only P(grade >= k).
        self.assertFalse(
            self.driver.find_elements(
                By.CSS_SELECTOR, ".model-panel ul.probabilities:not(.cumulative)"
            )
        )
        bars = self.driver.find_elements(By.CSS_SELECTOR, ".model-panel ul.cumulative li")
        self.assertEqual([int(b.get_attribute("data-grade")) for b in bars], [1, 2, 3, 4])
        self.assertEqual([round(bar_percent(b)) for b in bars], [95, 85, 45, 15])
        reached = [
            int(b.get_attribute("data-grade"))
            for b in bars
            if "reached" in b.get_attribute("class")
        ]
        self.assertEqual(
            max(reached), self.predicted_value(), "the highest grade reached is the grade shown"
        )
        # The threshold of the grade shown is passed by the expected grade; the next one is not.
        thresholds = [
            float(b.find_element(By.CSS_SELECTOR, ".threshold").text.split()[-1]) for b in bars
        ]
        self.assertLessEqual(thresholds[2], expected)
        self.assertGreater(thresholds[3], expected)
        self.screenshot("grading-model-panel-ordinal")


@pytest.mark.browser
@pytest.mark.slow
class BarsUnderTheStyleCspTests(MigrationDataKeptMixin, BrowserTestCase):
    """Issue 20: the CSP has no 'unsafe-inline' for styles; the bars take their width from a class
    (static/grading/widths.css), so they are still drawn to scale and nothing is blocked."""

    def test_the_bars_are_drawn_to_scale_without_a_csp_violation(self):
        workbench_set(blind_first_grader=False)
        version = ModelVersion.objects.create(
            name="v8", state=ModelVersion.State.ACTIVE, class_values=[0, 1, 2, 3, 4]
        )
        image = image_make(seed=73)
        prediction_make(image=image, version=version, probabilities=[0.1, 0.15, 0.2, 0.5, 0.05])
        self.login(self.alice)
        self.driver.get(self.live_server_url + f"/grade/{image.pk}/")
        self.wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, ".model-panel .prediction"))
        ratios = self.driver.execute_script(
            "return [...document.querySelectorAll('.model-panel ul.probabilities .bar')]"
            ".map(b => b.firstElementChild.getBoundingClientRect().width"
            " / b.getBoundingClientRect().width);"
        )
        self.assertEqual([round(r, 2) for r in ratios], [0.1, 0.15, 0.2, 0.5, 0.05])
