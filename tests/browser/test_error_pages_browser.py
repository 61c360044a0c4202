"""Error pages and the home page in headless Chromium: a clinician who opens an admin page is told
which role it needs and follows a link back to work; an unknown address gets the product's 404;
the favicon loads."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from tests.browser.base import BrowserTestCase
from tests.factories import image_make
from tests.factories_grading import MigrationDataKeptMixin


@pytest.mark.browser
@pytest.mark.slow
class ErrorPagesBrowserTests(MigrationDataKeptMixin, BrowserTestCase):
    def test_a_clinician_is_told_the_role_and_finds_the_way_back_to_work(self):
        image_make()
        self.login(self.alice)
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-start-grading]")))
        self.screenshot("home-clinician")

        self.driver.get(self.live_server_url + "/models/")
        page = self.wait_for(
            EC.presence_of_element_located((By.CSS_SELECTOR, "[data-error='403']"))
        )
        self.assertIn("This page needs the admin role", page.text)
        self.assertIn("signed in as alice (clinician)", page.text)
        self.screenshot("error-403")
        page.find_element(By.LINK_TEXT, "Worklist").click()
        self.wait_for(lambda d: d.current_url.endswith("/worklist/"))

        self.driver.get(self.live_server_url + "/no-such-page/")
        page = self.wait_for(
            EC.presence_of_element_located((By.CSS_SELECTOR, "[data-error='404']"))
        )
        self.assertIn("This page does not exist", page.text)
        self.screenshot("error-404")
        page.find_element(By.LINK_TEXT, "Your home page").click()
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-start-grading]")))

        favicon_status = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch('/favicon.ico').then((r) => done([r.status, r.headers.get('content-type')]));"
        )
        self.assertEqual(favicon_status[0], 200)
        self.assertIn("svg", favicon_status[1])
