"""The admin's grading settings page (grades per image, blind first read, queue order, lease)."""

from __future__ import annotations

from django.urls import reverse

from grading.models import Image
from grading.selectors.worklist import workbench_settings_get
from tests.factories import image_make
from tests.factories_grading import GradingTestCase, grade_give, workbench_set

URL = reverse("workbench_settings")
VALID = {
    "grades_required": "2",
    "blind_first_grader": "on",
    "queue_order": "uncertain",
    "claim_minutes": "15",
    "auto_retrain_after": "0",
    # Uncertainty order reveals the model to blind readers: allowed explicitly.
    "allow_uncertain_order_when_blind": "on",
}


class WorkbenchSettingsTests(GradingTestCase):
    def test_only_admins_change_the_settings(self):
        self.assertStatusByUser(URL, adam=200, alice=403, rita=403, nora=403)
        self.login(self.alice)
        self.assertEqual(self.client.post(URL, VALID).status_code, 403)
        self.assertEqual(workbench_settings_get().grades_required, 1)

    def test_the_menu_links_to_the_settings_for_admins_only(self):
        link = f'<a href="{reverse("settings_index")}">Settings</a>'
        self.login(self.adam)
        self.assertContains(self.client.get(reverse("patients")), link)
        for user in (self.alice, self.rita):
            with self.subTest(user=user.username):
                self.login(user)
                self.assertNotContains(self.client.get(reverse("patients")), link)

    def test_it_saves_the_policy(self):
        self.login(self.adam)
        response = self.client.post(URL, VALID, follow=True)
        self.assertContains(response, "Grading settings saved")
        row = workbench_settings_get()
        self.assertEqual(
            (row.grades_required, row.blind_first_grader, row.queue_order, row.claim_minutes),
            (2, True, "uncertain", 15),
        )

    def test_it_validates(self):
        self.login(self.adam)
        for field, value in (
            ("grades_required", "3"),
            ("claim_minutes", "0"),
            ("queue_order", "x"),
        ):
            with self.subTest(field=field):
                response = self.client.post(URL, VALID | {field: value})
                self.assertEqual(response.status_code, 400)
        self.assertEqual(workbench_settings_get().grades_required, 1)

    def test_going_from_two_grades_to_one_settles_waiting_images(self):
        workbench_set(grades_required=2)
        image = image_make()
        grade_give(image, self.alice, 3)
        self.login(self.adam)
        response = self.client.post(URL, VALID | {"grades_required": "1"}, follow=True)
        self.assertContains(response, "1 pending image(s) now have enough grades")
        image.refresh_from_db()
        self.assertEqual(image.grading_state, Image.GradingState.CONFIRMED)


class SettingsHelpTests(GradingTestCase):
    def test_every_field_has_help_text_tied_to_it(self):
        self.login(self.adam)
        response = self.client.get(URL)
        form = response.context["form"]
        html = response.content.decode()
        for field in form:
            with self.subTest(field=field.name):
                self.assertTrue(field.help_text, f"{field.name} has no help text")
                self.assertIn(f'id="{field.auto_id}_helptext"', html)
        self.assertIn('aria-describedby="id_claim_minutes_helptext"', html)
        self.assertIn('class="form-actions"', html)
