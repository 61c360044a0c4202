"""The grading page: permissions, validation, blind and assisted modes, two graders."""

from __future__ import annotations

import datetime as dt

from django.urls import reverse

from grading.models import Grade, GradingClaim, Image
from tests.factories import image_make, patient_make
from tests.factories_grading import (
    GradingTestCase,
    grade_give,
    model_version_active_make,
    prediction_make,
    workbench_set,
)

# Distinctive figures of the prediction, to look for in the HTML.
PROBABILITIES = [0.031, 0.062, 0.123, 0.718, 0.066]
PREDICTION_MARKERS = ("72%", "v-test-1", "Severe NPDR</strong>", "Predicts")


def grade_url(image: Image) -> str:
    return reverse("grade_image", args=[image.pk])


class GradePagePermissionTests(GradingTestCase):
    def test_only_graders_may_open_or_post(self):
        image = image_make()
        self.assertStatusByUser(grade_url(image), alice=200, adam=200, rita=403, nora=403)
        self.login(self.rita)
        self.assertEqual(self.client.post(grade_url(image), {"grade": "1"}).status_code, 403)
        self.assertFalse(Grade.objects.exists())

    def test_an_unknown_image_is_404(self):
        self.login(self.alice)
        self.assertEqual(self.client.get(reverse("grade_image", args=[99999])).status_code, 404)


class GradePageTests(GradingTestCase):
    def setUp(self):
        self.image = image_make()
        self.login(self.alice)

    def test_the_page_has_the_viewer_grade_buttons_and_shortcuts(self):
        response = self.client.get(grade_url(self.image))
        self.assertContains(response, "data-viewer")
        self.assertContains(response, reverse("image_view", args=[self.image.pk, "red_free"]))
        self.assertContains(response, reverse("image_view", args=[self.image.pk, "ben_graham"]))
        self.assertContains(response, reverse("image_file", args=[self.image.pk]))
        for value in range(5):
            self.assertContains(response, f'data-grade-key="{value}"')
        self.assertContains(response, "data-ungradable")
        self.assertContains(response, "grading/grade.js")
        self.assertContains(response, "grading/viewer.js")

    def test_opening_the_page_claims_the_image(self):
        self.client.get(grade_url(self.image))
        self.assertTrue(GradingClaim.objects.filter(image=self.image, grader=self.alice).exists())

    def test_it_warns_when_another_grader_holds_the_only_slot(self):
        self.client.get(grade_url(self.image))
        self.login(self.bob)
        self.assertContains(self.client.get(grade_url(self.image)), "Another clinician is grading")

    def test_saving_a_grade_confirms_it_and_shows_it(self):
        response = self.client.post(
            grade_url(self.image),
            {"grade": "2", "macular_oedema": "on", "notes": "hard exudates"},
            follow=True,
        )
        self.assertRedirects(response, grade_url(self.image))
        self.assertContains(response, "Grade saved: 2")
        self.assertContains(response, "data-saved-grade")
        self.image.refresh_from_db()
        self.assertEqual(self.image.confirmed_grade_id, 2)
        self.assertTrue(self.image.confirmed_macular_oedema)
        grade = Grade.objects.get(image=self.image)
        self.assertEqual((grade.grader, grade.notes), (self.alice, "hard exudates"))

    def test_it_rejects_a_submission_without_a_grade(self):
        response = self.client.post(grade_url(self.image), {"notes": "?"})
        self.assertEqual(response.status_code, 400)
        self.assertContains(response, "Choose a grade", status_code=400)
        self.assertFalse(Grade.objects.exists())

    def test_it_rejects_a_grade_and_ungradable_together(self):
        response = self.client.post(grade_url(self.image), {"grade": "1", "ungradable": "on"})
        self.assertContains(response, "not both", status_code=400)

    def test_it_rejects_a_grade_off_the_scale(self):
        response = self.client.post(grade_url(self.image), {"grade": "9"})
        self.assertEqual(response.status_code, 400)
        self.assertFalse(Grade.objects.exists())

    def test_ungradable_is_saved(self):
        self.client.post(grade_url(self.image), {"ungradable": "on"})
        self.image.refresh_from_db()
        self.assertTrue(self.image.confirmed_ungradable)

    def test_a_correction_supersedes_the_first_grade(self):
        self.client.post(grade_url(self.image), {"grade": "1"})
        response = self.client.post(grade_url(self.image), {"grade": "3"}, follow=True)
        self.assertContains(response, "Correction saved: 3")
        latest = Grade.objects.latest("id")
        self.assertEqual(latest.supersedes.grade_id, 1)

    def test_skip_releases_the_claim_and_serves_the_next_image(self):
        following = image_make()
        self.client.get(grade_url(self.image))
        response = self.client.post(grade_url(self.image), {"action": "skip"})
        self.assertRedirects(response, grade_url(following))
        self.assertFalse(GradingClaim.objects.filter(image=self.image, grader=self.alice).exists())

    def test_a_late_second_grader_is_told_the_grade_was_not_needed(self):
        self.client.get(grade_url(self.image))
        self.login(self.bob)
        self.client.get(grade_url(self.image))
        self.login(self.alice)
        self.client.post(grade_url(self.image), {"grade": "1"})
        self.login(self.bob)
        response = self.client.get(grade_url(self.image))
        self.assertContains(response, "no longer needs your grade")
        response = self.client.post(grade_url(self.image), {"grade": "3"}, follow=True)
        self.assertContains(response, "not recorded")
        self.assertEqual(Grade.objects.count(), 1)

    def test_the_previous_image_is_one_key_away(self):
        following = image_make()
        self.client.get(grade_url(self.image))
        response = self.client.get(grade_url(following))
        self.assertContains(response, f'href="{grade_url(self.image)}" data-previous')
        self.assertNotContains(self.client.get(grade_url(self.image)), "data-previous")

    def test_patient_context_shows_the_other_eye_and_earlier_visits(self):
        patient = patient_make("P-CONTEXT")
        day = dt.date(2024, 5, 1)
        image = image_make(patient=patient, eye=Image.Eye.RIGHT, acquired_on=day)
        image_make(patient=patient, eye=Image.Eye.LEFT, acquired_on=day, confirmed_grade=3)
        image_make(
            patient=patient, eye=Image.Eye.RIGHT, acquired_on=dt.date(2023, 4, 2), confirmed_grade=1
        )
        response = self.client.get(grade_url(image))
        self.assertContains(response, "P-CONTEXT")
        self.assertContains(response, "3 – Severe NPDR")
        self.assertContains(response, "2 Apr 2023")
        self.assertContains(response, "1 – Mild NPDR")
        self.assertContains(response, "Referable")

    def test_patient_context_groups_the_photographs_by_visit_date(self):
        from grading.selectors.patients import patient_context_for

        patient = patient_make("P-VISITS")
        day, earlier = dt.date(2026, 11, 2), dt.date(2025, 6, 30)
        image = image_make(patient=patient, eye=Image.Eye.RIGHT, acquired_on=day)
        retake = image_make(patient=patient, eye=Image.Eye.RIGHT, acquired_on=day)
        left = image_make(patient=patient, eye=Image.Eye.LEFT, acquired_on=day, confirmed_grade=0)
        old_left = image_make(patient=patient, eye=Image.Eye.LEFT, acquired_on=earlier)
        old_right = image_make(patient=patient, eye=Image.Eye.RIGHT, acquired_on=earlier)
        undated = image_make(patient=patient, eye=Image.Eye.RIGHT, acquired_on=None)
        context = patient_context_for(image=image)
        # The same-day retake of the same eye belongs to this visit, not to "Other visits".
        self.assertEqual(context.this_visit, [retake, left])
        visits = {visit.day: visit.images for visit in context.other_visits}
        self.assertEqual(visits[earlier], [old_right, old_left])
        self.assertEqual(visits[None], [undated])
        html = self.client.get(grade_url(image)).content.decode()
        self.assertIn('data-visit="2025-06-30"', html)
        self.assertIn('data-visit="unknown"', html)

    def test_an_undated_photograph_has_no_same_visit(self):
        from grading.selectors.patients import patient_context_for

        patient = patient_make("P-UNDATED")
        image = image_make(patient=patient, eye=Image.Eye.RIGHT, acquired_on=None)
        image_make(patient=patient, eye=Image.Eye.LEFT, acquired_on=None)
        context = patient_context_for(image=image)
        self.assertEqual(context.this_visit, [])
        self.assertEqual([visit.day for visit in context.other_visits], [None])
        self.assertContains(self.client.get(grade_url(image)), "This photograph has no date")


class BlindModeTests(GradingTestCase):
    """The model's prediction is not in the HTML for the first grader until their grade is saved."""

    def setUp(self):
        self.version = model_version_active_make()
        self.image = image_make()
        prediction_make(
            image=self.image, version=self.version, probabilities=PROBABILITIES, with_cam=True
        )

    def assertPredictionHidden(self, response) -> None:
        html = response.content.decode()
        for marker in PREDICTION_MARKERS:
            self.assertNotIn(marker, html)
        self.assertNotIn(reverse("image_cam", args=[self.image.pk]), html)
        self.assertIn("Blind first read", html)

    def assertPredictionShown(self, response) -> None:
        html = response.content.decode()
        for marker in PREDICTION_MARKERS:
            self.assertIn(marker, html)
        self.assertIn(reverse("image_cam", args=[self.image.pk]), html)

    def test_the_first_grader_does_not_get_the_prediction_until_the_grade_is_saved(self):
        self.login(self.alice)
        self.assertPredictionHidden(self.client.get(grade_url(self.image)))
        # Nor the activation map, which would give the game away.
        self.assertEqual(
            self.client.get(reverse("image_cam", args=[self.image.pk])).status_code, 403
        )
        response = self.client.post(grade_url(self.image), {"grade": "2"}, follow=True)
        self.assertPredictionShown(response)
        self.assertContains(response, "differs from your grade")
        self.assertEqual(
            self.client.get(reverse("image_cam", args=[self.image.pk])).status_code, 200
        )

    def test_after_saving_the_prediction_is_shown_beside_an_agreeing_grade(self):
        self.login(self.alice)
        response = self.client.post(grade_url(self.image), {"grade": "3"}, follow=True)
        self.assertContains(response, "agrees with your grade")

    def test_assisted_mode_shows_the_prediction_before_grading(self):
        workbench_set(blind_first_grader=False)
        self.login(self.alice)
        self.assertPredictionShown(self.client.get(grade_url(self.image)))

    def test_the_panel_says_when_the_version_was_trained_on_this_photograph(self):
        workbench_set(blind_first_grader=False)
        self.login(self.alice)
        self.assertNotContains(self.client.get(grade_url(self.image)), "was trained on")
        self.image.predictions.update(in_training=True)
        response = self.client.get(grade_url(self.image))
        self.assertContains(response, "was trained on this photograph's confirmed grade")

    def test_the_second_grader_is_assisted_but_never_sees_the_first_grade(self):
        workbench_set(grades_required=2)
        grade_give(self.image, self.alice, 1, notes="alice-note-xyz")
        self.login(self.bob)
        response = self.client.get(grade_url(self.image))
        self.assertPredictionShown(response)
        html = response.content.decode()
        self.assertNotIn("alice-note-xyz", html)
        self.assertNotIn("1 – Mild NPDR", html)
        self.assertNotIn("data-saved-grade", html)

    def test_the_page_says_when_there_is_no_prediction(self):
        workbench_set(blind_first_grader=False)
        other = image_make()
        self.login(self.alice)
        self.assertContains(
            self.client.get(grade_url(other)), "has not predicted this photograph yet"
        )

    def test_without_an_active_model_the_page_says_so(self):
        workbench_set(blind_first_grader=False)
        self.version.state = "retired"
        self.version.save()
        self.login(self.alice)
        self.assertContains(self.client.get(grade_url(self.image)), "No model is active yet")

    def test_without_a_cam_file_the_page_says_not_available(self):
        workbench_set(blind_first_grader=False)
        other = image_make()
        prediction_make(image=other, version=self.version, probabilities=PROBABILITIES)
        self.login(self.alice)
        response = self.client.get(grade_url(other))
        self.assertContains(response, "Activation map: not available")
        self.assertNotContains(response, reverse("image_cam", args=[other.pk]))
        self.assertEqual(self.client.get(reverse("image_cam", args=[other.pk])).status_code, 404)


class TwoGraderPageTests(GradingTestCase):
    def setUp(self):
        workbench_set(grades_required=2)
        self.image = image_make()

    def test_agreement_confirms_the_image(self):
        self.login(self.alice)
        self.client.post(grade_url(self.image), {"grade": "2"})
        self.image.refresh_from_db()
        self.assertEqual(self.image.grading_state, Image.GradingState.PENDING)
        self.login(self.bob)
        self.client.post(grade_url(self.image), {"grade": "2"})
        self.image.refresh_from_db()
        self.assertEqual(self.image.grading_state, Image.GradingState.CONFIRMED)
        self.assertEqual(self.image.confirmation_method, Image.ConfirmationMethod.AGREEMENT)

    def test_disagreement_sends_the_image_to_adjudication(self):
        self.login(self.alice)
        self.client.post(grade_url(self.image), {"grade": "1"})
        self.login(self.bob)
        self.client.post(grade_url(self.image), {"grade": "4"})
        self.image.refresh_from_db()
        self.assertEqual(self.image.grading_state, Image.GradingState.ADJUDICATION)
        self.login(self.rita)
        self.assertContains(self.client.get(reverse("adjudication_queue")), f"#{self.image.pk}")
