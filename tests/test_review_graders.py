"""Grader agreement: each clinician's latest independent grade against the confirmed grade, leaving
out grades that alone decided the confirmed grade."""

from __future__ import annotations

from grading.models import Grade, Image
from grading.selectors.grader_agreement import grader_agreement
from tests.base import BaseTestCase
from tests.factories_review import at, grade_correct, grade_make, image_confirm, images_bulk_make

METHOD = Image.ConfirmationMethod


class GraderAgreementTests(BaseTestCase):
    """A constructed history of seven images (see each image's comment); the expected numbers are
    worked out by hand in the tests."""

    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        alice, bob, rita = cls.alice, cls.bob, cls.rita
        i1, i2, i3, i4, i5, i6, i7 = images_bulk_make(7)
        # I1: alice alone graded it (single grading) -> her grade is the confirmed grade: circular.
        grade_make(image=i1, grader=alice, value=2, created=at(1))
        image_confirm(image=i1, method=METHOD.SINGLE, value=2, when=at(1, 13))
        # I2: alice and bob agreed on 1.
        grade_make(image=i2, grader=alice, value=1, created=at(2))
        grade_make(image=i2, grader=bob, value=1, created=at(2, 13))
        image_confirm(image=i2, method=METHOD.AGREEMENT, value=1, when=at(2, 13))
        # I3: alice 3, bob 2, rita adjudicated 2.
        grade_make(image=i3, grader=alice, value=3, created=at(3))
        grade_make(image=i3, grader=bob, value=2, created=at(3, 13))
        grade_make(image=i3, grader=rita, value=2, kind=Grade.Kind.ADJUDICATION, created=at(3, 14))
        image_confirm(image=i3, method=METHOD.ADJUDICATION, value=2, by=rita, when=at(3, 14))
        # I4: alice 0, bob 2, rita adjudicated 0.
        grade_make(image=i4, grader=alice, value=0, created=at(4))
        grade_make(image=i4, grader=bob, value=2, created=at(4, 13))
        grade_make(image=i4, grader=rita, value=0, kind=Grade.Kind.ADJUDICATION, created=at(4, 14))
        image_confirm(image=i4, method=METHOD.ADJUDICATION, value=0, by=rita, when=at(4, 14))
        # I5: an imported reference grade 4; alice graded it afterwards (quality assurance): 4.
        grade_make(
            image=i5, source="import:reference", value=4, kind=Grade.Kind.IMPORT, created=at(5)
        )
        image_confirm(image=i5, method=METHOD.IMPORT, value=4, when=at(5))
        grade_make(image=i5, grader=alice, value=4, created=at(6))
        # I6: alice said 2, then corrected herself to 3; bob 3; agreement on 3. Only her
        # correction counts.
        first = grade_make(image=i6, grader=alice, value=2, created=at(7))
        grade_correct(first, value=3, created=at(7, 13))
        grade_make(image=i6, grader=bob, value=3, created=at(7, 14))
        image_confirm(image=i6, method=METHOD.AGREEMENT, value=3, when=at(7, 14))
        # I7: alice 1, bob ungradable; rita adjudicated 1.
        grade_make(image=i7, grader=alice, value=1, created=at(8))
        grade_make(image=i7, grader=bob, ungradable=True, created=at(8, 13))
        grade_make(image=i7, grader=rita, value=1, kind=Grade.Kind.ADJUDICATION, created=at(8, 14))
        image_confirm(image=i7, method=METHOD.ADJUDICATION, value=1, by=rita, when=at(8, 14))
        # A pending image: no confirmed grade, so nothing to compare with.
        (pending,) = images_bulk_make(1)
        grade_make(image=pending, grader=alice, value=4, created=at(9))

    def results(self, **kwargs):
        return {result.grader_name: result for result in grader_agreement(**kwargs)}

    def test_alice_against_the_final_grade(self):
        # I2 (1,1), I3 (2 vs her 3), I4 (0,0), I5 (4,4), I6 (3,3), I7 (1,1); I1 left out.
        # Confirmed counts r = [1,2,1,1,1], hers c = [1,2,0,2,1], n = 6. Observed weighted
        # disagreement 1/16; expected sum r_i c_j (i-j)^2 / (16*6) = 138/96. QWK = 1 - 6/138 = 22/23.
        alice = self.results()["alice"]
        self.assertEqual(alice.n, 6)
        self.assertEqual(alice.excluded, 1)
        self.assertAlmostEqual(alice.accuracy, 5 / 6)
        self.assertAlmostEqual(alice.qwk, 22 / 23)
        self.assertEqual(alice.sensitivity, 1.0)  # I3, I5, I6 referable, all called referable
        self.assertEqual(alice.specificity, 1.0)
        self.assertEqual(alice.basis_counts, {"agreement": 2, "adjudication": 3, "import": 1})

    def test_bob_against_the_final_grade(self):
        # I2 (1,1), I3 (2,2), I4 (0 vs his 2), I6 (3,3); I7 ungradable on his side only.
        # r = [1,1,1,1,0], c = [0,1,2,1,0]: expected 32/64, observed 4/16 -> QWK 0.5.
        bob = self.results()["bob"]
        self.assertEqual(bob.n, 4)
        self.assertEqual(bob.ungradable_mismatches, 1)
        self.assertAlmostEqual(bob.accuracy, 0.75)
        self.assertAlmostEqual(bob.qwk, 0.5)
        self.assertEqual(bob.sensitivity, 1.0)  # I3, I6
        self.assertEqual(bob.specificity, 0.5)  # I2 right, I4 called referable

    def test_the_independent_reference_drops_agreement_images(self):
        results = self.results(reference="independent")
        alice, bob = results["alice"], results["bob"]
        # Alice: I3 (2 vs 3), I4, I5, I7. r = [1,1,1,0,1], c = [1,1,0,1,1]: expected 76/64,
        # observed 4/64 -> QWK 18/19. I1, I2, I6 left out.
        self.assertEqual((alice.n, alice.excluded), (4, 3))
        self.assertAlmostEqual(alice.qwk, 18 / 19)
        self.assertAlmostEqual(alice.accuracy, 0.75)
        # Bob: I3 (2,2) and I4 (0 vs 2): the expected and observed disagreement are equal -> 0.
        self.assertEqual(bob.n, 2)
        self.assertAlmostEqual(bob.qwk, 0.0)
        self.assertEqual((bob.sensitivity, bob.specificity), (1.0, 0.0))

    def test_adjudicators_are_not_graders_and_own_adjudication_is_left_out(self):
        self.assertNotIn("rita", self.results())
        (image,) = images_bulk_make(1)
        grade_make(image=image, grader=self.adam, value=1, created=at(10))
        grade_make(image=image, grader=self.bob, value=3, created=at(10, 13))
        grade_make(
            image=image, grader=self.adam, value=1, kind=Grade.Kind.ADJUDICATION, created=at(10, 14)
        )
        image_confirm(
            image=image, method=METHOD.ADJUDICATION, value=1, by=self.adam, when=at(10, 14)
        )
        adam = self.results()["adam"]
        self.assertEqual((adam.n, adam.excluded), (0, 1))
        self.assertIsNone(adam.qwk)

    def test_it_filters_by_grade_date(self):
        alice = self.results(date_from=at(5).date(), date_to=at(8).date())["alice"]
        self.assertEqual(alice.n, 3)  # I5, I6 (correction on day 7), I7

    def test_the_page_explains_the_method_and_shows_the_table(self):
        self.login(self.rita)
        response = self.client.get("/review/graders/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "only</em> basis of the confirmed grade")
        self.assertContains(response, 'data-metric="qwk">0.957<')  # alice, 22/23
        response = self.client.get("/review/graders/", {"reference": "independent"})
        self.assertContains(response, 'data-metric="qwk">0.947<')  # alice, 18/19

    def test_the_page_needs_the_review_permission_and_valid_input(self):
        self.login(self.alice)
        self.assertEqual(self.client.get("/review/graders/").status_code, 403)
        self.login(self.rita)
        response = self.client.get("/review/graders/", {"reference": "mine"})
        self.assertEqual(response.status_code, 400)


class GraderAgreementWithTheGradingServiceTests(BaseTestCase):
    """The same rules on a history written by the grading service itself (double grading)."""

    def test_agreement_counts_for_the_final_grade_and_adjudication_for_both(self):
        from grading.selectors.worklist import workbench_settings_get
        from grading.services.grades import GradeInput, grade_adjudicate, grade_submit

        settings = workbench_settings_get()
        settings.grades_required = 2
        settings.save()
        agreed, disputed = images_bulk_make(2)
        for grader in (self.alice, self.bob):
            grade_submit(image=agreed, grader=grader, choice=GradeInput(grade=1))
        grade_submit(image=disputed, grader=self.alice, choice=GradeInput(grade=3))
        grade_submit(image=disputed, grader=self.bob, choice=GradeInput(grade=1))
        grade_adjudicate(image=disputed, reviewer=self.rita, choice=GradeInput(grade=3))
        agreed.refresh_from_db()
        self.assertEqual(agreed.confirmation_method, METHOD.AGREEMENT)

        final = {r.grader_name: r for r in grader_agreement()}
        self.assertEqual(final["alice"].basis_counts, {"agreement": 1, "adjudication": 1})
        self.assertEqual((final["alice"].n, final["alice"].accuracy), (2, 1.0))
        self.assertEqual((final["bob"].n, final["bob"].accuracy), (2, 0.5))
        independent = {r.grader_name: r for r in grader_agreement(reference="independent")}
        self.assertEqual((independent["alice"].n, independent["alice"].excluded), (1, 1))
