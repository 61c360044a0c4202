"""Claims: a short lease keeps two clinicians off an image that needs only one more grade."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from grading.models import GradingClaim
from grading.services.claims import (
    claim_next,
    claim_release,
    claim_take,
    claims_expired_sweep,
    claims_sweep_reset,
)
from tests.factories import image_make
from tests.factories_grading import GradingTestCase, grade_give, workbench_set


class ClaimNextTests(GradingTestCase):
    def setUp(self):
        self.first = image_make()
        self.second = image_make()

    def test_it_serves_the_oldest_image_and_leases_it(self):
        workbench_set(claim_minutes=7)
        image = claim_next(grader=self.alice, order="oldest")
        self.assertEqual(image, self.first)
        claim = GradingClaim.objects.get(image=image, grader=self.alice)
        remaining = claim.expires_at - timezone.now()
        self.assertTrue(dt.timedelta(minutes=6) < remaining <= dt.timedelta(minutes=7))

    def test_two_graders_get_different_images_when_one_grade_is_needed(self):
        self.assertEqual(claim_next(grader=self.alice, order="oldest"), self.first)
        self.assertEqual(claim_next(grader=self.bob, order="oldest"), self.second)
        self.assertIsNone(claim_next(grader=self.adam, order="oldest"))

    def test_two_graders_share_an_image_that_needs_two_grades(self):
        workbench_set(grades_required=2)
        self.assertEqual(claim_next(grader=self.alice, order="oldest"), self.first)
        self.assertEqual(claim_next(grader=self.bob, order="oldest"), self.first)
        # Both slots of the first image are taken: a third grader starts on the second.
        self.assertEqual(claim_next(grader=self.adam, order="oldest"), self.second)

    def test_a_grader_gets_their_held_image_back_first(self):
        held = claim_next(grader=self.alice, order="oldest")
        self.assertEqual(claim_next(grader=self.alice, order="random", seed="x"), held)
        self.assertEqual(GradingClaim.objects.filter(grader=self.alice).count(), 1)

    def test_skipped_images_are_passed_over(self):
        held = claim_next(grader=self.alice, order="oldest")
        claim_release(image=held, grader=self.alice)
        self.assertEqual(
            claim_next(grader=self.alice, order="oldest", exclude_ids=[held.pk]), self.second
        )

    def test_an_expired_lease_frees_the_image(self):
        claim_next(grader=self.alice, order="oldest")
        GradingClaim.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
        self.assertEqual(claim_next(grader=self.bob, order="oldest"), self.first)

    def test_expired_leases_are_swept_at_most_once_a_minute_per_process(self):
        claim_next(grader=self.alice, order="oldest")
        GradingClaim.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
        claims_sweep_reset()
        self.assertEqual(claims_expired_sweep(now=timezone.now()), 1)
        self.assertFalse(GradingClaim.objects.filter(grader=self.alice).exists())
        claim_next(grader=self.alice, order="oldest")
        GradingClaim.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
        self.assertIsNone(claims_expired_sweep(now=timezone.now()))  # not due yet
        self.assertTrue(GradingClaim.objects.filter(grader=self.alice).exists())

    def test_a_clinician_reclaims_their_own_expired_lease_in_place(self):
        held = claim_next(grader=self.alice, order="oldest")
        GradingClaim.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
        self.assertTrue(claim_take(image=held, grader=self.alice))
        claim = GradingClaim.objects.get(grader=self.alice)
        self.assertGreater(claim.expires_at, timezone.now())

    def test_a_graded_image_is_not_served_to_its_grader_again(self):
        workbench_set(grades_required=2)
        grade_give(self.first, self.alice, 1)
        self.assertEqual(claim_next(grader=self.alice, order="oldest"), self.second)
        self.assertEqual(claim_next(grader=self.bob, order="oldest"), self.first)

    def test_claim_take_refuses_an_image_held_by_another_grader(self):
        self.assertTrue(claim_take(image=self.first, grader=self.alice))
        self.assertFalse(claim_take(image=self.first, grader=self.bob))
        self.assertTrue(claim_take(image=self.first, grader=self.alice))  # renews

    def test_confirmed_images_are_never_served(self):
        grade_give(self.first, self.alice, 0)
        grade_give(self.second, self.alice, 0)
        image_make(confirmed_grade=2)
        self.assertIsNone(claim_next(grader=self.bob, order="oldest"))


class ClaimNextOrderTests(GradingTestCase):
    def test_uncertain_serves_the_highest_entropy_then_the_unpredicted(self):
        from tests.factories_grading import model_version_active_make, prediction_make

        version = model_version_active_make()
        sure, unsure, unpredicted = image_make(), image_make(), image_make()
        prediction_make(image=sure, version=version, probabilities=[0.96, 0.01, 0.01, 0.01, 0.01])
        prediction_make(image=unsure, version=version, probabilities=[0.2] * 5)
        served = [claim_next(grader=user, order="uncertain") for user in (self.alice, self.bob)]
        self.assertEqual(served, [unsure, sure])
        self.assertEqual(claim_next(grader=self.adam, order="uncertain"), unpredicted)

    def test_random_serves_every_image_once_in_a_seeded_order(self):
        images = {image_make().pk for _ in range(6)}
        served = []
        for _ in range(6):
            image = claim_next(grader=self.alice, order="random", seed="s", exclude_ids=served)
            claim_release(image=image, grader=self.alice)
            served.append(image.pk)
        self.assertEqual(set(served), images)
        self.assertIsNone(
            claim_next(grader=self.alice, order="random", seed="s", exclude_ids=served)
        )
