"""WCAG 2.1 A/AA with axe-core (axe-selenium-python) on every page in each role's navigation and
on the grading page at 1366x768, plus what automated rules do not cover on the grading page:
Save and Skip in sight, `?` opening the key help as a dialog, "saved" announced in a live region,
messages that cover no control, a visible focus ring. Screenshots: grading-grade-1366.png,
grading-model-panel-abstained.png, grading-key-help.png."""

from __future__ import annotations

import pytest
from axe_selenium_python import Axe
from django.test import override_settings
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from grading.models import Image, Prediction
from tests.browser.base import BrowserTestCase
from tests.factories import image_make
from tests.factories_grading import (
    MigrationDataKeptMixin,
    model_version_active_make,
    prediction_make,
    workbench_set,
)

# The bundled axe-core (3.1.1) tags its WCAG 2.1 rules wcag21aa only (no rule is tagged wcag21a).
WCAG_21_AA = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21aa"]}}


def in_view(driver, element) -> bool:
    """The element is fully inside the window and not hidden behind another element."""
    return bool(
        driver.execute_script(
            """
            const el = arguments[0], r = el.getBoundingClientRect();
            if (r.width === 0 || r.top < 0 || r.bottom > window.innerHeight
                || r.right > window.innerWidth) return false;
            const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
            return hit === el || el.contains(hit);
            """,
            element,
        )
    )


@pytest.mark.browser
@pytest.mark.slow
class AccessibilityBrowserTests(MigrationDataKeptMixin, BrowserTestCase):
    def setUp(self):
        super().setUp()
        self.driver.set_window_size(1366, 768)
        self.image = image_make(seed=81)
        self.version = model_version_active_make()
        prediction_make(
            image=self.image, version=self.version, probabilities=[0.1, 0.15, 0.2, 0.5, 0.05]
        )

    def assertNoViolations(self, label: str) -> None:
        axe = Axe(self.driver)
        axe.inject()
        self.driver.set_script_timeout(120)
        # axe.run's promise, with its rejection reported rather than waited out.
        results = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, arguments[0]).then(done, (e) => done({error: String(e)}));",
            WCAG_21_AA,
        )
        self.assertNotIn("error", results, label)
        self.assertEqual(results["violations"], [], f"{label}: {axe.report(results['violations'])}")

    def nav_urls(self) -> list[str]:
        self.driver.get(self.live_server_url + "/")
        links = self.driver.find_elements(By.CSS_SELECTOR, 'nav[aria-label="Main"] a')
        return [link.get_attribute("href") for link in links]

    def test_every_page_in_each_roles_navigation_has_no_wcag_21_aa_violation(self):
        checked = set()
        for user in (self.alice, self.rita, self.adam):
            self.login(user)
            urls = [self.live_server_url + "/", *self.nav_urls()]
            self.assertGreater(len(urls), 3, user.username)
            for url in urls:
                with self.subTest(user=user.username, url=url):
                    self.driver.get(url)
                    self.assertNoViolations(f"{user.username} {url}")
                    checked.add(url.removeprefix(self.live_server_url))
        # Every area of the navigation was looked at by some role.
        self.assertTrue(
            {"/worklist/", "/quality/", "/certification/", "/review/", "/audit/"} <= checked,
            checked,
        )

    def test_the_grading_page_fits_1366x768_and_is_accessible(self):
        workbench_set(blind_first_grader=True)
        self.login(self.alice)
        self.driver.get(self.live_server_url + f"/grade/{self.image.pk}/")
        # As the page opens (axe scrolls the side panel while it checks contrast).
        save = self.driver.find_element(By.CSS_SELECTOR, "[data-submit]")
        skip = self.driver.find_element(By.CSS_SELECTOR, "[data-skip]")
        self.assertTrue(in_view(self.driver, save), "Save is below the fold at 1366x768")
        self.assertTrue(in_view(self.driver, skip), "Skip is below the fold at 1366x768")
        self.screenshot("grading-grade-1366")
        self.assertNoViolations("grading page")
        self.driver.execute_script("document.querySelector('.grading-side').scrollTop = 0")

        # Keyboard focus shows a ring.
        body = self.driver.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.TAB)
        outline = self.driver.execute_script(
            "const s = getComputedStyle(document.activeElement);"
            "return [s.outlineStyle, s.outlineWidth, document.activeElement.tagName];"
        )
        self.assertNotEqual(outline[0], "none", outline)
        self.assertNotEqual(outline[1], "0px", outline)

        # `?` opens the key help as a modal dialog; Esc closes it. Enter on the side panel's help
        # summary opens it there instead of asking for a grade.
        self.driver.execute_script("document.activeElement.blur()")
        body.send_keys("?")
        dialog = self.driver.find_element(By.CSS_SELECTOR, "[data-key-help-dialog]")
        self.wait_for(lambda d: dialog.get_attribute("open") is not None)
        self.assertIn("Keyboard shortcuts", dialog.text)
        self.assertNoViolations("key help dialog")
        self.screenshot("grading-key-help")
        self.driver.switch_to.active_element.send_keys(Keys.ESCAPE)
        self.wait_for(lambda d: dialog.get_attribute("open") is None)
        summary = self.driver.find_element(By.CSS_SELECTOR, "[data-keyboard-help] summary")
        self.driver.execute_script("arguments[0].focus()", summary)
        summary.send_keys(Keys.ENTER)
        hint = self.driver.find_element(By.CSS_SELECTOR, "[data-key-hint]")
        self.assertEqual(hint.text, "")

        # Save: the page says so in a live region, and the message covers no control.
        body.send_keys("2")
        body.send_keys(Keys.ENTER)
        live = self.wait_for(
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, "[data-live-status]")
                and "saved"
                in d.find_element(By.CSS_SELECTOR, "[data-live-status]")
                .get_attribute("textContent")
                .lower()
                and d.find_element(By.CSS_SELECTOR, "[data-live-status]")
            )
        )
        self.assertEqual(live.get_attribute("role"), "status")
        for selector in ("[data-next]", ".grading-side summary", ".viewer-toolbar button"):
            for control in self.driver.find_elements(By.CSS_SELECTOR, selector):
                if control.is_displayed() and control.rect["y"] < 768:
                    self.assertTrue(in_view(self.driver, control), f"covered: {selector}")
        self.assertNoViolations("grading page after saving")

    @override_settings(FUNDUS_QUALITY_GATE=True)
    def test_the_model_panel_abstains_on_an_unusable_photo(self):
        workbench_set(blind_first_grader=False)
        Image.objects.filter(pk=self.image.pk).update(quality_score=0.0)
        Prediction.objects.filter(image=self.image).update(ood_score=3.2)
        self.login(self.alice)
        self.driver.get(self.live_server_url + f"/grade/{self.image.pk}/")
        panel = self.driver.find_element(By.CSS_SELECTOR, ".model-panel")
        self.driver.execute_script(
            "const side = document.querySelector('.grading-side');"
            "side.scrollTop += arguments[0].getBoundingClientRect().top"
            " - side.getBoundingClientRect().top;",
            panel,
        )
        self.assertIn("Photo not gradable by the model", panel.text)
        self.assertNotIn("Predicts", panel.text)
        self.screenshot("grading-model-panel-abstained")
        self.assertNoViolations("abstaining model panel")

    def test_the_audit_filters_are_accessible(self):
        self.login(self.adam)
        self.driver.get(self.live_server_url + "/audit/?action=1")
        self.assertTrue(self.driver.find_elements(By.CSS_SELECTOR, "form.audit-filters select"))
        self.assertNoViolations("audit filters")
        self.screenshot("audit-filters")
