from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from tests.browser.base import BrowserTestCase


@pytest.mark.browser
class LoginBrowserTests(BrowserTestCase):
    def test_it_logs_in_and_shows_the_user(self):
        self.login(self.adam)
        header = self.driver.find_element(By.CSS_SELECTOR, ".topbar .who").text
        self.assertIn("adam", header)
        self.assertIn("admin", header)
        self.screenshot("home")
