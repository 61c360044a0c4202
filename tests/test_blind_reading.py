"""Blind reading holds for every independent reader (second readers and admins included) until
they save; the queue order does not leak the model's confidence; nobody adjudicates their own
disagreement unless the settings allow it, and then the record says so."""

from __future__ import annotations

from django.urls import reverse

from grading.models import Grade, Image, ModelVersion
from grading.services.grades import GradeInput, GradeRejected, grade_adjudicate
from tests.factories import image_make
from tests.factories_grading import (
    GradingTestCase,
    grade_give,
    model_version_active_make,
    prediction_make,
    workbench_set,
)

PROBABILITIES = [0.031, 0.062, 0.123, 0.718, 0.066]
CANDIDATE_MARKER = "v-candidate-9"


class BlindForEveryReaderTests(GradingTestCase):
    def setUp(self):
        workbench_set(grades_required=2, blind_first_grader=True)
        self.version = model_version_active_make()
        candidate = ModelVersion.objects.create(
            name=CANDIDATE_MARKER, state="candidate", class_values=[0, 1, 2, 3, 4]
        )
        self.image = image_make()
        prediction_make(
            image=self.image, version=self.version, probabilities=PROBABILITIES, with_cam=True
        )
        prediction_make(image=self.image, version=candidate, probabilities=PROBABILITIES)
        grade_give(self.image, self.alice, 1, notes="alice-secret-note")

    def _pages(self) -> dict[str, str]:
        return {
            "grade": reverse("grade_image", args=[self.image.pk]),
            "detail": reverse("image_detail", args=[self.image.pk]),
            "cam": reverse("image_cam", args=[self.image.pk]),
        }

    def assertBlind(self, user) -> None:
        self.login(user)
        pages = self._pages()
        for name in ("grade", "detail"):
            html = self.client.get(pages[name]).content.decode()
            with self.subTest(user=user.username, page=name):
                self.assertNotIn("72%", html)
                self.assertNotIn("71.8", html)
                self.assertNotIn(CANDIDATE_MARKER, html)
                self.assertNotIn("alice-secret-note", html)
                self.assertNotIn(pages["cam"], html)
        self.assertEqual(self.client.get(pages["cam"]).status_code, 403)

    def test_the_second_reader_sees_no_model_no_candidate_no_map_until_saving(self):
        self.assertBlind(self.bob)
        self.client.post(self._pages()["grade"], {"grade": "3"})
        self.assertEqual(self.client.get(self._pages()["cam"]).status_code, 200)

    def test_an_admin_who_may_grade_reads_blind_too(self):
        self.assertBlind(self.adam)

    def test_an_admin_is_sent_from_the_adjudication_page_of_a_pending_image_to_grade_it(self):
        self.login(self.adam)
        response = self.client.get(reverse("adjudicate", args=[self.image.pk]), follow=True)
        self.assertRedirects(response, self._pages()["grade"])
        self.assertNotContains(response, "alice-secret-note")
        self.assertNotContains(response, "72%")

    def test_a_reviewer_who_does_not_grade_still_sees_the_evidence(self):
        self.login(self.rita)
        html = self.client.get(self._pages()["detail"]).content.decode()
        self.assertIn("alice-secret-note", html)
        self.assertIn(CANDIDATE_MARKER, html)

    def test_api_and_export_hide_predictions_of_images_the_admin_may_still_grade(self):
        self.login(self.adam)
        rows = self.client.get(reverse("api_images")).json()["results"]
        self.assertIsNone(next(r for r in rows if r["id"] == self.image.pk)["latest_prediction"])
        for url in (
            reverse("api_model_version_predictions", args=[self.version.name]),
            reverse("export_predictions_csv"),
        ):
            body = b"".join(self.client.get(url).streaming_content) if "csv" in url else None
            if body is None:
                ids = [row["image"] for row in self.client.get(url).json()["results"]]
                self.assertNotIn(self.image.pk, ids, url)
            else:
                self.assertNotIn(self.image.sha256.encode(), body, url)

    def test_the_grades_export_leaves_out_others_grades_of_images_the_admin_may_grade(self):
        workbench_set(blind_first_grader=False)  # about the model; graders stay independent
        self.login(self.adam)
        body = b"".join(self.client.get(reverse("export_grades_csv")).streaming_content)
        self.assertNotIn(b"alice-secret-note", body)
        self.login(self.rita)
        body = b"".join(self.client.get(reverse("export_grades_csv")).streaming_content)
        self.assertIn(b"alice-secret-note", body)

    def test_blind_mode_off_shows_the_model_to_readers(self):
        workbench_set(blind_first_grader=False)
        self.login(self.bob)
        self.assertContains(self.client.get(self._pages()["grade"]), "72%")


class QueueOrderTests(GradingTestCase):
    def test_a_blind_reader_cannot_order_by_the_models_uncertainty(self):
        workbench_set(blind_first_grader=True)
        self.login(self.alice)
        response = self.client.get(reverse("worklist") + "?order=uncertain", follow=True)
        self.assertContains(response, "reveal the model&#x27;s confidence")
        self.assertNotIn("grading_queue_order", self.client.session)
        self.assertNotContains(response, 'value="uncertain"')

    def test_the_admin_may_allow_it_on_the_settings_page_which_says_what_it_reveals(self):
        self.login(self.adam)
        page = self.client.get(reverse("workbench_settings"))
        self.assertContains(page, "This reveals the model&#x27;s confidence")
        workbench_set(blind_first_grader=True, allow_uncertain_order_when_blind=True)
        self.login(self.alice)
        self.client.get(reverse("worklist") + "?order=uncertain")
        self.assertEqual(self.client.session["grading_queue_order"], "uncertain")

    def test_the_settings_refuse_an_uncertain_default_during_blind_reading(self):
        self.login(self.adam)
        response = self.client.post(
            reverse("workbench_settings"),
            {
                "grades_required": "1",
                "blind_first_grader": "on",
                "queue_order": "uncertain",
                "claim_minutes": "10",
                "auto_retrain_after": "0",
            },
        )
        self.assertEqual(response.status_code, 400)
        self.assertContains(response, "reveals the model", status_code=400)


class SelfAdjudicationTests(GradingTestCase):
    def setUp(self):
        workbench_set(grades_required=2)
        self.image = image_make()
        grade_give(self.image, self.alice, 1)
        grade_give(self.image, self.adam, 3)
        self.image.refresh_from_db()
        self.assertEqual(self.image.grading_state, Image.GradingState.ADJUDICATION)

    def test_a_grader_cannot_adjudicate_their_own_disagreement(self):
        with self.assertRaises(GradeRejected):
            grade_adjudicate(image=self.image, reviewer=self.adam, choice=GradeInput(grade=3))
        self.login(self.adam)
        response = self.client.post(
            reverse("adjudicate", args=[self.image.pk]), {"grade": "3"}, follow=True
        )
        self.assertContains(response, "another reviewer must adjudicate it")
        self.assertFalse(Grade.objects.filter(kind=Grade.Kind.ADJUDICATION).exists())

    def test_another_reviewer_adjudicates_normally(self):
        grade = grade_adjudicate(image=self.image, reviewer=self.rita, choice=GradeInput(grade=2))
        self.assertFalse(grade.adjudicator_graded)

    def test_when_the_settings_allow_it_the_record_says_so(self):
        workbench_set(allow_self_adjudication=True)
        grade = grade_adjudicate(image=self.image, reviewer=self.adam, choice=GradeInput(grade=3))
        self.assertTrue(grade.adjudicator_graded)
        self.login(self.rita)
        self.assertContains(
            self.client.get(reverse("image_detail", args=[self.image.pk])),
            "Adjudicated by one of its own graders",
        )
