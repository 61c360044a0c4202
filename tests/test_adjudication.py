"""Adjudication queue and page: a reviewer sees both grades, the notes and the model, and decides."""

from __future__ import annotations

from django.urls import reverse

from grading.models import Grade, Image
from tests.factories import image_make, patient_make
from tests.factories_grading import (
    GradingTestCase,
    grade_give,
    model_version_active_make,
    prediction_make,
    workbench_set,
)

QUEUE_URL = reverse("adjudication_queue")


def adjudicate_url(image: Image) -> str:
    return reverse("adjudicate", args=[image.pk])


class AdjudicationTests(GradingTestCase):
    def setUp(self):
        workbench_set(grades_required=2)
        self.image = image_make(patient=patient_make("P-DISAGREE"))
        grade_give(self.image, self.alice, 1, notes="few microaneurysms")
        grade_give(self.image, self.bob, 3, macular_oedema=True, notes="venous beading")

    def test_only_reviewers_and_admins_may_adjudicate(self):
        self.assertStatusByUser(
            QUEUE_URL, adjudicate_url(self.image), rita=200, adam=200, alice=403, nora=403
        )
        self.login(self.alice)
        self.assertEqual(
            self.client.post(adjudicate_url(self.image), {"grade": "1"}).status_code, 403
        )
        self.image.refresh_from_db()
        self.assertEqual(self.image.grading_state, Image.GradingState.ADJUDICATION)

    def test_the_queue_lists_the_disagreement_with_both_grades(self):
        self.login(self.rita)
        response = self.client.get(QUEUE_URL)
        self.assertContains(response, "P-DISAGREE")
        self.assertContains(response, "alice: 1")
        self.assertContains(response, "bob: 3 + MO")

    def test_the_queue_and_the_page_link_to_the_image_history(self):
        history = f'href="{reverse("image_detail", args=[self.image.pk])}"'
        self.login(self.rita)
        self.assertContains(self.client.get(QUEUE_URL), history)
        self.assertContains(self.client.get(adjudicate_url(self.image)), history)

    def test_the_page_shows_both_grades_notes_and_the_model(self):
        version = model_version_active_make()
        prediction_make(image=self.image, version=version, probabilities=[0.1, 0.1, 0.6, 0.1, 0.1])
        self.login(self.rita)
        response = self.client.get(adjudicate_url(self.image))
        self.assertContains(response, "few microaneurysms")
        self.assertContains(response, "venous beading")
        self.assertContains(response, "1 – Mild NPDR")
        self.assertContains(response, "3 – Severe NPDR")
        self.assertContains(response, 'Predicts <strong class="predicted-grade">2 – Moderate NPDR')

    def test_the_reviewers_decision_becomes_the_confirmed_grade(self):
        self.login(self.rita)
        response = self.client.post(
            adjudicate_url(self.image), {"grade": "2", "notes": "IRMA in one quadrant"}, follow=True
        )
        self.assertRedirects(response, QUEUE_URL)
        self.assertContains(response, "confirmed by adjudication: 2")
        self.image.refresh_from_db()
        self.assertEqual(self.image.grading_state, Image.GradingState.CONFIRMED)
        self.assertEqual(self.image.confirmed_grade_id, 2)
        self.assertEqual(self.image.confirmation_method, Image.ConfirmationMethod.ADJUDICATION)
        self.assertEqual(self.image.confirmed_by, self.rita)
        adjudication = Grade.objects.get(image=self.image, kind=Grade.Kind.ADJUDICATION)
        self.assertEqual(adjudication.notes, "IRMA in one quadrant")
        self.assertNotContains(self.client.get(QUEUE_URL), "P-DISAGREE")

    def test_it_goes_on_to_the_next_disagreement(self):
        other = image_make()
        grade_give(other, self.alice, 0)
        grade_give(other, self.bob, 2)
        self.login(self.rita)
        response = self.client.post(adjudicate_url(self.image), {"grade": "2"})
        self.assertRedirects(response, adjudicate_url(other))

    def test_it_validates_the_decision(self):
        self.login(self.rita)
        response = self.client.post(adjudicate_url(self.image), {"notes": "unsure"})
        self.assertContains(response, "Choose a grade", status_code=400)
        self.image.refresh_from_db()
        self.assertEqual(self.image.grading_state, Image.GradingState.ADJUDICATION)

    def test_a_pending_image_cannot_be_adjudicated(self):
        pending = image_make()
        self.login(self.rita)
        response = self.client.post(adjudicate_url(pending), {"grade": "2"}, follow=True)
        self.assertContains(response, "still waiting for its independent grades")
        self.assertFalse(Grade.objects.filter(image=pending).exists())


class ModelDisagreementFlagTests(GradingTestCase):
    def setUp(self):
        self.version = model_version_active_make()
        self.far = image_make(patient=patient_make("P-FAR"), confirmed_grade=0)
        self.near = image_make(patient=patient_make("P-NEAR"), confirmed_grade=1)
        prediction_make(
            image=self.far, version=self.version, probabilities=[0.1, 0.1, 0.1, 0.6, 0.1]
        )
        prediction_make(
            image=self.near, version=self.version, probabilities=[0.1, 0.1, 0.7, 0.05, 0.05]
        )

    def test_confirmed_grades_two_or_more_from_the_model_are_flagged(self):
        self.login(self.rita)
        response = self.client.get(QUEUE_URL)
        self.assertContains(response, "Model disagrees by two grades or more")
        self.assertContains(response, "P-FAR")
        self.assertNotContains(response, "P-NEAR")

    def test_a_flagged_image_links_to_its_history(self):
        self.login(self.rita)
        response = self.client.get(QUEUE_URL)
        self.assertContains(response, f'href="{reverse("image_detail", args=[self.far.pk])}"')

    def test_adjudicating_a_flagged_image_clears_the_flag(self):
        self.login(self.rita)
        self.client.post(adjudicate_url(self.far), {"grade": "0", "notes": "artefact, no DR"})
        self.far.refresh_from_db()
        self.assertEqual(self.far.confirmation_method, Image.ConfirmationMethod.ADJUDICATION)
        self.assertNotContains(self.client.get(QUEUE_URL), "P-FAR")

    def test_flags_beyond_one_page_are_paged_newest_first(self):
        far = [self.far]
        for n in range(55):
            image = image_make(patient=patient_make(f"P-MORE-{n}"), confirmed_grade=4)
            prediction_make(
                image=image, version=self.version, probabilities=[0.9, 0.025, 0.025, 0.025, 0.025]
            )
            far.append(image)
        self.login(self.rita)
        first = self.client.get(QUEUE_URL).context["flagged_page"]
        second = self.client.get(QUEUE_URL, {"page": 2}).context["flagged_page"]
        self.assertEqual(first.paginator.count, 56)
        shown = [p.image_id for p in first.object_list] + [p.image_id for p in second.object_list]
        self.assertEqual(shown, [image.pk for image in reversed(far)])  # newest prediction first
        self.assertEqual(second.object_list[0].image.patient.pseudonym, "P-MORE-4")

    def test_no_active_model_means_no_flags(self):
        self.version.state = "retired"
        self.version.save()
        self.login(self.rita)
        self.assertNotContains(self.client.get(QUEUE_URL), "P-FAR")
