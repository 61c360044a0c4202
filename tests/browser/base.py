"""Headless Chromium (Debian's chromium + chromidriver) driving the real pages via Selenium."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from django.contrib.staticfiles.testing import StaticLiveServerTestCase
from django.test import override_settings

from tests.factories import user_make

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
SCREENSHOT_DIR = Path(__file__).resolve().parent.parent.parent / "test-artifacts" / "screenshots"
PASSWORD = "secret-pass-123"


def chromium_driver(width: int = 1366, height: int = 900):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    return driver


class BrowserTestCase(StaticLiveServerTestCase):
    """Named users like the view tests: alice and bob grade, rita reviews, adam administers."""

    # Each live-server test flushes the database; restore the roles and grade scale the data
    # migration created, or the next test finds no groups.
    serialized_rollback = True

    @classmethod
    def setUpClass(cls):
        if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
            raise RuntimeError(
                f"Browser tests need {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver"
            )
        cls._media_dir = tempfile.mkdtemp(prefix="funduscope-browser-media-")
        cls._media_override = override_settings(MEDIA_ROOT=cls._media_dir)
        cls._media_override.enable()
        super().setUpClass()
        cls.driver = chromium_driver()

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        super().tearDownClass()
        cls._media_override.disable()
        shutil.rmtree(cls._media_dir, ignore_errors=True)

    def setUp(self):
        self.alice = user_make("alice", "clinician")
        self.bob = user_make("bob", "clinician")
        self.rita = user_make("rita", "reviewer")
        self.adam = user_make("adam", "admin")

    def login(self, user) -> None:
        from selenium.webdriver.common.by import By

        self.driver.delete_all_cookies()
        self.driver.get(self.live_server_url + "/accounts/login/")
        self.driver.find_element(By.ID, "id_username").send_keys(user.username)
        self.driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
        self.driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        self.wait_for(lambda d: "/accounts/login/" not in d.current_url)

    def wait_for(self, condition, timeout: float = 10):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout).until(condition)

    def screenshot(self, name: str) -> Path:
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOT_DIR / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path
