"""The image page: the photo, and every grade and prediction in time order with the confirmation."""

from __future__ import annotations

from django.urls import reverse

from grading.models import Grade, Image, ModelVersion
from tests.base import BaseTestCase
from tests.factories import image_make
from tests.factories_grading import workbench_set
from tests.factories_review import (
    at,
    grade_correct,
    grade_make,
    image_confirm,
    model_version_make,
    prediction_make,
)

METHOD = Image.ConfirmationMethod


class ImageTimelineTests(BaseTestCase):
    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        cls.image = image_make()
        Image.objects.filter(pk=cls.image.pk).update(uploaded_at=at(1))
        cls.old = model_version_make("v1", state=ModelVersion.State.RETIRED)
        cls.new = model_version_make("v2", state=ModelVersion.State.ACTIVE)
        prediction_make(
            image=cls.image,
            model_version=cls.old,
            grade=1,
            probabilities=[0.2, 0.5, 0.2, 0.05, 0.05],
            created=at(2),
        )
        cls.first = grade_make(
            image=cls.image, grader=cls.alice, value=2, notes="haemorrhages", created=at(3)
        )
        cls.correction = grade_correct(
            cls.first, value=3, macular_oedema=True, notes="missed venous beading", created=at(4)
        )
        cls.bobs = grade_make(image=cls.image, grader=cls.bob, value=1, created=at(5))
        cls.adjudication = grade_make(
            image=cls.image,
            grader=cls.rita,
            value=3,
            kind=Grade.Kind.ADJUDICATION,
            notes="beading in two quadrants",
            created=at(6),
        )
        image_confirm(image=cls.image, method=METHOD.ADJUDICATION, value=3, by=cls.rita, when=at(6))
        prediction_make(
            image=cls.image,
            model_version=cls.new,
            grade=3,
            probabilities=[0.02, 0.08, 0.2, 0.6, 0.1],
            created=at(7),
        )

    def page(self, user=None, image=None):
        self.login(user or self.rita)
        return self.client.get(f"/images/{(image or self.image).pk}/")

    def test_it_lists_every_grade_and_prediction_in_time_order(self):
        events = self.page().context["timeline"].events
        described = [
            (event.kind, event.grade.pk if event.grade else None, event.at.day) for event in events
        ]
        self.assertEqual(
            described,
            [
                ("upload", None, 1),
                ("prediction", None, 2),
                ("grade", self.first.pk, 3),
                ("grade", self.correction.pk, 4),
                ("grade", self.bobs.pk, 5),
                ("grade", self.adjudication.pk, 6),
                ("confirmation", None, 6),
                ("prediction", None, 7),
            ],
        )

    def test_it_shows_the_correction_superseding_the_first_grade(self):
        response = self.page()
        self.assertContains(response, f'Superseded by <a href="#grade-{self.correction.pk}">')
        self.assertContains(response, f'Corrects <a href="#grade-{self.first.pk}">')
        self.assertContains(response, "missed venous beading")
        self.assertContains(response, "Macular oedema")

    def test_it_says_how_the_confirmed_grade_was_reached(self):
        response = self.page()
        self.assertContains(response, "by rita&#x27;s adjudication")
        basis = [event.grade.pk for event in response.context["timeline"].events if event.is_basis]
        self.assertEqual(basis, [self.adjudication.pk])

    def test_it_shows_each_versions_probabilities_per_grade(self):
        response = self.page()
        self.assertContains(response, "by model v1")
        self.assertContains(response, "by model v2")
        self.assertContains(response, "60.0%")
        predictions = [e for e in response.context["timeline"].events if e.kind == "prediction"]
        bars = predictions[0].probabilities
        self.assertEqual([bar.value for bar in bars], [0, 1, 2, 3, 4])
        self.assertEqual([bar.is_predicted for bar in bars], [False, True, False, False, False])

    def test_an_agreement_names_both_graders(self):
        image = image_make()
        grade_make(image=image, grader=self.alice, value=1)
        grade_make(image=image, grader=self.bob, value=1)
        image_confirm(image=image, method=METHOD.AGREEMENT, value=1)
        text = self.page(image=image).context["timeline"].confirmation
        self.assertIn("independent graders agreed", text)
        self.assertIn("alice", text)
        self.assertIn("bob", text)

    def test_an_import_names_its_source(self):
        image = image_make(confirmed_grade=2)
        text = self.page(image=image).context["timeline"].confirmation
        self.assertEqual(text, "Confirmed as grade 2 (Moderate NPDR) by import from import:test.")

    def test_a_clinician_sees_only_their_own_grades_before_confirmation(self):
        image = image_make()
        grade_make(image=image, grader=self.bob, value=4, notes="bob's secret")
        response = self.page(self.alice, image)
        self.assertNotContains(response, "bob&#x27;s secret")
        self.assertContains(response, "hidden from you until it is confirmed")
        grade_make(image=image, grader=self.alice, value=1)
        self.assertNotContains(self.page(self.alice, image), "bob&#x27;s secret")
        self.assertContains(self.page(self.rita, image), "bob&#x27;s secret")

    def test_a_blinded_first_grader_gets_no_prediction_on_the_image_page(self):
        workbench_set(blind_first_grader=True)
        image = image_make()
        prediction_make(image=image, model_version=self.new, grade=2)
        response = self.page(self.alice, image)
        self.assertNotContains(response, "by model v2")
        self.assertTrue(response.context["timeline"].predictions_hidden)
        self.assertEqual(response.context["timeline"].prediction_count, 0)
        self.assertContains(response, "until you have saved your grade")
        # Reviewers are never blinded; the grader sees the model once her grade is saved.
        self.assertContains(self.page(self.rita, image), "by model v2")
        grade_make(image=image, grader=self.alice, value=1)
        self.assertContains(self.page(self.alice, image), "by model v2")

    def test_predictions_are_hidden_here_exactly_when_the_grading_page_hides_them(self):
        situations = {
            "blind, nobody has graded": (True, None),
            "blind, a colleague graded first (second reader)": (True, self.bob),
            "blind, she graded": (True, self.alice),
            "blind mode off": (False, None),
        }
        for situation, (blind, grader) in situations.items():
            with self.subTest(situation):
                workbench_set(blind_first_grader=blind)
                image = image_make()
                prediction_make(image=image, model_version=self.new, grade=2)
                if grader is not None:
                    grade_make(image=image, grader=grader, value=1)
                timeline = self.page(self.alice, image).context["timeline"]
                grading_page = self.client.get(reverse("grade_image", args=[image.pk]))
                hidden_there = grading_page.context["model_view"].state == "hidden"
                self.assertEqual(timeline.predictions_hidden, hidden_there)
                self.assertEqual(timeline.prediction_count, 0 if hidden_there else 1)
                # Every independent reader is blind until saving, the second one too.
                self.assertEqual(
                    hidden_there,
                    situation
                    in (
                        "blind, nobody has graded",
                        "blind, a colleague graded first (second reader)",
                    ),
                )

    def test_clinicians_see_the_whole_history_once_confirmed(self):
        self.assertContains(self.page(self.bob), "missed venous beading")

    def test_it_needs_a_role_and_an_existing_image(self):
        self.login(self.nora)
        self.assertEqual(self.client.get(f"/images/{self.image.pk}/").status_code, 403)
        self.login(self.alice)
        self.assertEqual(self.client.get("/images/999999/").status_code, 404)
