"""grade_submit / grade_adjudicate: confirmation by one grader, by agreement, or by adjudication."""

from __future__ import annotations

from grading.models import Grade, GradingClaim, Image
from grading.services.claims import claim_take
from grading.services.grades import GradeInput, GradeRejected, grade_adjudicate, grade_submit
from grading.services.workbench import workbench_settings_update
from tests.factories import image_make
from tests.factories_grading import GradingTestCase, grade_give, workbench_set


class SingleGraderTests(GradingTestCase):
    def test_it_confirms_with_one_grade_when_one_is_required(self):
        image = image_make()
        grade_give(image, self.alice, 2, macular_oedema=True, notes="  exudates  ")
        image.refresh_from_db()
        self.assertEqual(image.grading_state, Image.GradingState.CONFIRMED)
        self.assertEqual(image.confirmed_grade_id, 2)
        self.assertTrue(image.confirmed_macular_oedema)
        self.assertEqual(image.confirmation_method, Image.ConfirmationMethod.SINGLE)
        self.assertEqual(image.confirmed_by, self.alice)
        self.assertEqual(Grade.objects.get(image=image).notes, "exudates")

    def test_it_confirms_an_ungradable_image(self):
        image = image_make()
        grade_give(image, self.alice, None)
        image.refresh_from_db()
        self.assertEqual(image.grading_state, Image.GradingState.CONFIRMED)
        self.assertTrue(image.confirmed_ungradable)
        self.assertIsNone(image.confirmed_grade)

    def test_it_rejects_contradictory_or_empty_choices(self):
        image = image_make()
        cases = [
            (GradeInput(grade=None), "Choose a grade"),
            (GradeInput(grade=2, ungradable=True), "not both"),
            (GradeInput(grade=None, ungradable=True, macular_oedema=True), "macular oedema"),
            (GradeInput(grade=7), "not on the grading scale"),
            (GradeInput(grade=1, notes="x" * 5000), "limited"),
        ]
        for choice, message in cases:
            with self.subTest(message=message), self.assertRaisesMessage(GradeRejected, message):
                grade_submit(image=image, grader=self.alice, choice=choice)
        self.assertFalse(Grade.objects.exists())

    def test_it_refuses_a_new_grader_once_the_image_is_confirmed(self):
        image = image_make()
        grade_give(image, self.alice, 1)
        with self.assertRaisesMessage(GradeRejected, "already has the independent grades"):
            grade_give(image, self.bob, 3)
        self.assertEqual(Grade.objects.filter(image=image).count(), 1)

    def test_it_refuses_grading_an_imported_confirmed_image(self):
        image = image_make(confirmed_grade=0)
        with self.assertRaises(GradeRejected):
            grade_give(image, self.alice, 3)

    def test_a_correction_is_a_new_row_superseding_the_old(self):
        image = image_make()
        first = grade_give(image, self.alice, 1)
        second = grade_give(image, self.alice, 3)
        self.assertEqual(second.supersedes, first)
        self.assertEqual(Grade.objects.filter(image=image).count(), 2)
        image.refresh_from_db()
        self.assertEqual(image.confirmed_grade_id, 3)

    def test_saving_a_grade_releases_the_graders_claim(self):
        image = image_make()
        self.assertTrue(claim_take(image=image, grader=self.alice))
        grade_give(image, self.alice, 0)
        self.assertFalse(GradingClaim.objects.filter(image=image).exists())


class TwoGraderTests(GradingTestCase):
    def setUp(self):
        workbench_set(grades_required=2)

    def test_it_waits_for_the_second_grade(self):
        image = image_make()
        grade_give(image, self.alice, 2)
        image.refresh_from_db()
        self.assertEqual(image.grading_state, Image.GradingState.PENDING)
        self.assertIsNone(image.confirmed_grade)

    def test_agreement_confirms_the_grade(self):
        image = image_make()
        grade_give(image, self.alice, 2)
        grade_give(image, self.bob, 2, macular_oedema=True)
        image.refresh_from_db()
        self.assertEqual(image.grading_state, Image.GradingState.CONFIRMED)
        self.assertEqual(image.confirmation_method, Image.ConfirmationMethod.AGREEMENT)
        self.assertEqual(image.confirmed_grade_id, 2)
        # Either grader's oedema finding is kept.
        self.assertTrue(image.confirmed_macular_oedema)

    def test_disagreement_sends_the_image_to_adjudication(self):
        image = image_make()
        grade_give(image, self.alice, 1)
        grade_give(image, self.bob, 3)
        image.refresh_from_db()
        self.assertEqual(image.grading_state, Image.GradingState.ADJUDICATION)
        self.assertIsNone(image.confirmed_grade)

    def test_a_grade_and_an_ungradable_flag_disagree(self):
        image = image_make()
        grade_give(image, self.alice, 0)
        grade_give(image, self.bob, None)
        image.refresh_from_db()
        self.assertEqual(image.grading_state, Image.GradingState.ADJUDICATION)

    def test_a_correction_never_resolves_a_disagreement_by_agreement(self):
        # Issue 20: re-confirming by agreement let a reader find the other's grade by trying.
        image = image_make()
        grade_give(image, self.alice, 1)
        grade_give(image, self.bob, 3)
        with self.assertRaisesMessage(GradeRejected, "give the reason"):
            grade_give(image, self.bob, 1)
        grade_give(image, self.bob, 1, correction_reason="looked again")
        image.refresh_from_db()
        self.assertEqual(image.grading_state, Image.GradingState.ADJUDICATION)

    def test_a_third_grader_is_refused(self):
        image = image_make()
        grade_give(image, self.alice, 1)
        grade_give(image, self.bob, 1)
        with self.assertRaises(GradeRejected):
            grade_give(image, self.adam, 1)

    def test_adjudication_sets_the_confirmed_grade(self):
        image = image_make()
        grade_give(image, self.alice, 1)
        grade_give(image, self.bob, 3)
        adjudication = grade_adjudicate(
            image=image, reviewer=self.rita, choice=GradeInput(grade=2, notes="IRMA")
        )
        image.refresh_from_db()
        self.assertEqual(adjudication.kind, Grade.Kind.ADJUDICATION)
        self.assertEqual(image.grading_state, Image.GradingState.CONFIRMED)
        self.assertEqual(image.confirmed_grade_id, 2)
        self.assertEqual(image.confirmation_method, Image.ConfirmationMethod.ADJUDICATION)
        self.assertEqual(image.confirmed_by, self.rita)

    def test_an_adjudication_is_not_overturned_by_a_later_correction(self):
        image = image_make()
        grade_give(image, self.alice, 1)
        grade_give(image, self.bob, 3)
        grade_adjudicate(image=image, reviewer=self.rita, choice=GradeInput(grade=2))
        grade_give(image, self.bob, 4)
        image.refresh_from_db()
        self.assertEqual(image.confirmed_grade_id, 2)
        self.assertEqual(Grade.objects.filter(image=image).count(), 4)

    def test_a_second_adjudication_supersedes_the_first(self):
        image = image_make()
        grade_give(image, self.alice, 1)
        grade_give(image, self.bob, 3)
        first = grade_adjudicate(image=image, reviewer=self.rita, choice=GradeInput(grade=2))
        second = grade_adjudicate(image=image, reviewer=self.adam, choice=GradeInput(grade=3))
        self.assertEqual(second.supersedes, first)

    def test_adjudicating_a_pending_image_is_refused(self):
        image = image_make()
        grade_give(image, self.alice, 1)
        with self.assertRaisesMessage(GradeRejected, "still waiting"):
            grade_adjudicate(image=image, reviewer=self.rita, choice=GradeInput(grade=2))

    def test_lowering_the_requirement_settles_images_with_one_grade(self):
        image = image_make()
        grade_give(image, self.alice, 2)
        _, settled = workbench_settings_update(grades_required=1)
        image.refresh_from_db()
        self.assertEqual(settled, 1)
        self.assertEqual(image.grading_state, Image.GradingState.CONFIRMED)
        self.assertEqual(image.confirmation_method, Image.ConfirmationMethod.SINGLE)
