"""Grading in headless Chromium: three images with the keyboard only, zooming the photograph, and a
reviewer adjudicating a disagreement. Screenshots go to test-artifacts/screenshots/grading-*.png."""

from __future__ import annotations

import datetime as dt

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

from grading.models import Grade, Image
from grading.services.images import image_create, image_validate
from tests.browser.base import BrowserTestCase
from tests.conftest import RAW_FUNDUS_DIR
from tests.factories import fundus_jpeg_bytes, patient_make
from tests.factories_grading import (
    MigrationDataKeptMixin,
    grade_give,
    model_version_active_make,
    prediction_make,
    workbench_set,
)


def photograph_bytes(index: int) -> bytes:
    """A real full-size fundus photograph when the shared folder is there (nicer screenshots),
    else a synthetic one: the test does not depend on the shared data."""
    photos = sorted(RAW_FUNDUS_DIR.glob("*.jpg")) if RAW_FUNDUS_DIR.is_dir() else []
    if len(photos) > index:
        return photos[index].read_bytes()
    return fundus_jpeg_bytes(size=512, seed=4242 + index, lesion=(200, 300))


def photograph_make(index: int, patient, eye: str, day: dt.date, grade: int | None = None) -> Image:
    from grading.models import GradeLevel

    level = GradeLevel.objects.get(value=grade) if grade is not None else None
    return image_create(
        validated=image_validate(data=photograph_bytes(index)),
        patient=patient,
        eye=eye,
        acquired_on=day,
        confirmed_grade=level,
        import_source="import:test" if level else "",
    )


@pytest.mark.browser
@pytest.mark.slow
class GradingBrowserTests(MigrationDataKeptMixin, BrowserTestCase):
    def press(self, *keys: str) -> None:
        ActionChains(self.driver).send_keys(*keys).perform()

    def wait_for_page(self, path: str, marker: str = "body") -> None:
        self.wait_for(lambda d: d.current_url.endswith(path))
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, marker)))

    def test_it_grades_three_images_with_the_keyboard_and_zooms(self):
        version = model_version_active_make("mobilenet-2026-11")
        patient = patient_make("P-00042")
        day = dt.date(2026, 10, 14)
        photograph_make(5, patient, "L", day, grade=1)
        photograph_make(6, patient, "R", dt.date(2025, 9, 2), grade=1)
        images = [
            photograph_make(0, patient, "R", day),
            photograph_make(1, patient_make("P-00108"), "L", day),
            photograph_make(2, patient_make("P-00213"), "R", day),
        ]
        for image, probabilities in zip(
            images,
            (
                [0.04, 0.11, 0.58, 0.22, 0.05],
                [0.82, 0.12, 0.04, 0.01, 0.01],
                [0.1, 0.2, 0.3, 0.25, 0.15],
            ),
            strict=True,
        ):
            prediction_make(
                image=image, version=version, probabilities=probabilities, with_cam=True
            )

        self.login(self.alice)
        self.driver.get(self.live_server_url + "/worklist/")
        self.wait_for_page("/worklist/", "table.worklist")
        self.screenshot("grading-worklist")

        # Keyboard only from here: the "Next image" button has the focus.
        self.assertEqual(self.driver.switch_to.active_element.text, "Next image →")
        self.press(Keys.ENTER)
        expected = [(images[0], "2", True), (images[1], "0", False), (images[2], "u", False)]
        for index, (image, key, oedema) in enumerate(expected):
            self.wait_for_page(f"/grade/{image.pk}/", "[data-grade-form]")
            self.assertIn("Blind reading", self.driver.page_source)
            self.assertNotIn("Predicts", self.driver.page_source)
            if index == 0:
                self.zoom_with_wheel_and_keys()
                self.screenshot("grading-grade-blind")
            self.press(key)
            if oedema:
                self.press("m")
            self.press(Keys.ENTER)
            self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-saved-grade]")))
            self.assertIn("Predicts", self.driver.page_source)  # revealed beside the saved grade
            if index == 0:
                self.screenshot("grading-grade")
            self.press(Keys.ENTER)  # after saving, Enter goes on to the next image
        self.wait_for_page("/worklist/", ".card.empty")
        self.assertIn("Nothing left to grade", self.driver.page_source)

        grades = {g.image_id: g for g in Grade.objects.filter(grader=self.alice)}
        self.assertEqual(grades[images[0].pk].grade_id, 2)
        self.assertTrue(grades[images[0].pk].macular_oedema)
        self.assertEqual(grades[images[1].pk].grade_id, 0)
        self.assertTrue(grades[images[2].pk].ungradable)
        for image in images:
            image.refresh_from_db()
            self.assertEqual(image.grading_state, Image.GradingState.CONFIRMED)

    def zoom_with_wheel_and_keys(self) -> None:
        canvas = self.driver.find_element(By.CSS_SELECTOR, "[data-canvas]")
        stage = self.driver.find_element(By.CSS_SELECTOR, "[data-stage]")
        self.wait_for(
            lambda d: d.execute_script(
                "return arguments[0].complete", d.find_element(By.CSS_SELECTOR, "[data-image]")
            )
        )
        self.assertEqual(canvas.get_attribute("data-scale"), "1.000")
        ActionChains(self.driver).scroll_from_origin(
            ScrollOrigin.from_element(stage), 0, -400
        ).perform()
        self.wait_for(lambda d: float(canvas.get_attribute("data-scale")) > 1.5)
        wheel_scale = float(canvas.get_attribute("data-scale"))
        self.press("+")
        self.assertGreater(float(canvas.get_attribute("data-scale")), wheel_scale)
        # Zooming about the pointer moved the picture: the transform has a translation.
        self.assertIn("translate(", canvas.get_attribute("style"))
        self.press("f")
        self.assertEqual(canvas.get_attribute("data-scale"), "1.000")
        # V cycles through the server-rendered views; each must load as a picture.
        for mode in ("cropped", "red_free", "ben_graham"):
            self.press("v")
            self.wait_for(
                lambda d, mode=mode: d.execute_script(
                    "const img = document.querySelector('[data-image]');"
                    "return img.src.endsWith(arguments[0]) && img.complete && img.naturalWidth > 0;",
                    f"/view/{mode}.png",
                )
            )
        self.press("v")  # back to the original photograph
        self.press("+", "+")
        # Drag pans the zoomed photograph.
        before = canvas.get_attribute("style")
        ActionChains(self.driver).click_and_hold(stage).move_by_offset(60, 40).move_by_offset(
            20, 10
        ).release().perform()
        self.assertNotEqual(canvas.get_attribute("style"), before)
        # Brightness: a focused slider keeps its arrow keys (they do not change the image).
        slider = self.driver.find_element(By.CSS_SELECTOR, "[data-brightness]")
        slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
        image_style = self.driver.find_element(By.CSS_SELECTOR, "[data-image]").get_attribute(
            "style"
        )
        self.assertIn("brightness(1.1)", image_style)
        self.assertIn("/grade/", self.driver.current_url)
        self.driver.execute_script("document.activeElement.blur()")

    def test_a_reviewer_adjudicates_a_disagreement(self):
        workbench_set(grades_required=2)
        version = model_version_active_make("mobilenet-2026-11")
        image = photograph_make(3, patient_make("P-00077"), "L", dt.date(2026, 11, 2))
        prediction_make(
            image=image,
            version=version,
            probabilities=[0.03, 0.12, 0.61, 0.19, 0.05],
            with_cam=True,
        )
        grade_give(image, self.alice, 1, notes="A few microaneurysms only.")
        grade_give(
            image, self.bob, 3, macular_oedema=True, notes="Venous beading in two quadrants."
        )

        self.login(self.rita)
        self.driver.get(self.live_server_url + "/adjudication/")
        self.wait_for_page("/adjudication/", "table")
        self.assertIn("P-00077", self.driver.page_source)
        self.screenshot("grading-adjudication-queue")
        self.driver.find_element(By.LINK_TEXT, "Adjudicate").click()
        self.wait_for_page(f"/adjudicate/{image.pk}/", "[data-grade-form]")
        page = self.driver.page_source
        self.assertIn("A few microaneurysms only.", page)
        self.assertIn("Venous beading in two quadrants.", page)
        self.assertIn("Predicts", page)
        self.press("2")
        notes = self.driver.find_element(By.ID, "id_notes")
        # Out from under the sticky Save bar, as a reader scrolls to it.
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", notes)
        notes.click()
        notes.send_keys("IRMA present; beading not convincing.")
        notes.send_keys(Keys.ESCAPE)
        self.driver.execute_script("document.querySelector('.grading-side').scrollTop = 0")
        self.screenshot("grading-adjudication")
        self.press(Keys.ENTER)
        self.wait_for_page("/adjudication/", ".messages")
        self.assertIn("confirmed by adjudication: 2", self.driver.page_source)

        image.refresh_from_db()
        self.assertEqual(image.grading_state, Image.GradingState.CONFIRMED)
        self.assertEqual(image.confirmed_grade_id, 2)
        self.assertEqual(image.confirmation_method, Image.ConfirmationMethod.ADJUDICATION)
        self.assertEqual(image.confirmed_by, self.rita)

    def test_upload_and_patient_pages_on_a_tablet(self):
        import tempfile
        from pathlib import Path

        self.driver.set_window_size(820, 1180)
        self.addCleanup(self.driver.set_window_size, 1366, 900)
        self.login(self.alice)
        self.driver.get(self.live_server_url + "/upload/")
        folder = Path(tempfile.mkdtemp(prefix="funduscope-upload-"))
        photo = folder / "right-eye.jpg"
        photo.write_bytes(photograph_bytes(4))
        junk = folder / "notes.jpg"
        junk.write_bytes(b"not a photograph")
        self.driver.find_element(By.ID, "id_patient_id").send_keys("P-00913")
        self.driver.find_element(By.ID, "id_acquired_on").send_keys("03022026")
        self.driver.find_element(By.ID, "id_files").send_keys(f"{photo}\n{junk}")
        self.driver.find_element(By.CSS_SELECTOR, ".upload-form button[type=submit]").click()
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, ".upload-report")))
        page = self.driver.page_source
        self.assertIn("not an image file", page)
        self.assertIn("Stored as image", page)
        self.screenshot("grading-upload-tablet")

        image = Image.objects.get(patient__pseudonym="P-00913")
        self.assertEqual(image.acquired_on, dt.date(2026, 3, 2))
        self.driver.find_element(By.LINK_TEXT, "P-00913").click()
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, ".eyes")))
        self.assertIn("No confirmed grade yet", self.driver.page_source)
        self.wait_for(
            lambda d: d.execute_script(
                "const img = document.querySelector('.timeline img');"
                "return img.complete && img.naturalWidth > 0;"
            )
        )
        self.screenshot("grading-patient-tablet")

        self.driver.get(self.live_server_url + f"/grade/{image.pk}/")
        self.wait_for(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-grade-form]")))
        self.screenshot("grading-grade-tablet")
