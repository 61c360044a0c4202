"""Corrections reveal nothing: once an image needs adjudication, or once the reader may have seen
the model's opinion, a correction is a request for the adjudicator, never a re-confirmation by
agreement (issue 20's oracle sequence, and "move towards the model after seeing it")."""

from __future__ import annotations

from django.urls import reverse

from grading.models import CorrectionRequest, Grade, Image
from grading.services.grades import GradeInput, grade_adjudicate, grade_save
from tests.factories import image_make
from tests.factories_grading import (
    GradingTestCase,
    grade_give,
    model_version_active_make,
    prediction_make,
    workbench_set,
)

SECRET_NOTES = "alice-first-reader-notes-4f1c"


class CorrectionOracleTests(GradingTestCase):
    def setUp(self):
        workbench_set(grades_required=2, blind_first_grader=True)
        self.image = image_make()

    def _post(self, grade: int, reason: str = "") -> str:
        response = self.client.post(
            reverse("grade_image", args=[self.image.pk]),
            {"grade": grade, "correction_reason": reason},
            follow=True,
        )
        self.assertEqual(response.status_code, 200)
        return response.content.decode()

    def _seen_pages(self) -> str:
        pages = [
            self.client.get(reverse("grade_image", args=[self.image.pk])),
            self.client.get(reverse("image_detail", args=[self.image.pk])),
            self.client.get(reverse("api_image_grades", args=[self.image.pk])),
        ]
        return "".join(page.content.decode() for page in pages)

    def test_it_refuses_the_oracle_sequence_of_issue_20(self):
        grade_give(self.image, self.alice, 3, notes=SECRET_NOTES)
        self.login(self.bob)
        self._post(1)
        self.image.refresh_from_db()
        self.assertEqual(self.image.grading_state, Image.GradingState.ADJUDICATION)
        for value in (0, 2, 3):
            without_reason = self._post(value)
            self.assertIn("give the reason", without_reason)
            page = self._post(value, reason=f"second look, {value}")
            self.assertIn("correction request is sent to an adjudicator", page)
            seen = page + self._seen_pages()
            self.assertNotIn(SECRET_NOTES, seen)
            self.assertNotIn("agreed", seen)
            self.assertNotIn("Confirmed as", seen)
            self.image.refresh_from_db()
            self.assertEqual(self.image.grading_state, Image.GradingState.ADJUDICATION)
        # Bob's grade is still his first one; his corrections wait for the adjudicator.
        bobs = Grade.objects.filter(image=self.image, grader=self.bob)
        self.assertEqual([g.grade_id for g in bobs], [1])
        requests = CorrectionRequest.objects.filter(image=self.image, grader=self.bob)
        self.assertEqual([r.grade_id for r in requests], [0, 2, 3])
        # The adjudicator sees them with their reasons, and settles them.
        self.login(self.rita)
        page = self.client.get(reverse("adjudicate", args=[self.image.pk])).content.decode()
        self.assertIn("second look, 3", page)
        grade_adjudicate(image=self.image, reviewer=self.rita, choice=GradeInput(grade=3))
        self.assertFalse(CorrectionRequest.objects.filter(resolved_at__isnull=True).exists())
        self.assertTrue(all(r.resolved_by == self.rita for r in requests.all()))

    def test_a_correction_towards_the_model_after_seeing_it_goes_to_the_adjudicator(self):
        version = model_version_active_make()
        prediction_make(image=self.image, version=version, probabilities=[0, 0.1, 0.8, 0.1, 0])
        self.login(self.alice)
        self._post(0)
        page = self.client.get(reverse("grade_image", args=[self.image.pk])).content.decode()
        self.assertIn("80.0", page)  # the model's opinion is shown once her grade is saved
        self._post(2, reason="the model saw something")
        alices = Grade.objects.filter(image=self.image, grader=self.alice)
        self.assertEqual([g.grade_id for g in alices], [0])
        # Bob agrees with the model: no confirmation by agreement with Alice's request.
        grade_give(self.image, self.bob, 2)
        self.image.refresh_from_db()
        self.assertEqual(self.image.grading_state, Image.GradingState.ADJUDICATION)
        self.assertIsNone(self.image.confirmed_grade_id)

    def test_a_correction_while_pending_and_without_a_model_is_a_new_grade(self):
        grade_give(self.image, self.alice, 1)
        saved = grade_save(image=self.image, grader=self.alice, choice=GradeInput(grade=2))
        self.assertIsNone(saved.request)
        self.assertEqual(saved.grade.grade_id, 2)
        self.assertEqual(saved.grade.supersedes.grade_id, 1)

    def test_a_correction_of_a_confirmed_image_with_a_model_goes_to_the_adjudicator(self):
        grade_give(self.image, self.alice, 2)
        grade_give(self.image, self.bob, 2)
        version = model_version_active_make()
        prediction_make(image=self.image, version=version, probabilities=[0, 0, 0, 0.9, 0.1])
        self.image.refresh_from_db()
        self.assertEqual(self.image.grading_state, Image.GradingState.CONFIRMED)
        choice = GradeInput(grade=3, correction_reason="missed the NVE")
        saved = grade_save(image=self.image, grader=self.bob, choice=choice)
        self.assertIsNotNone(saved.request)
        self.image.refresh_from_db()
        self.assertEqual(self.image.grading_state, Image.GradingState.ADJUDICATION)
        # The same request again writes nothing.
        again = grade_save(image=self.image, grader=self.bob, choice=choice)
        self.assertFalse(again.changed)
        self.assertEqual(CorrectionRequest.objects.count(), 1)
