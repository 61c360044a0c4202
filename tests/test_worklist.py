"""The worklist page and the "Next image" button."""

from __future__ import annotations

from django.urls import reverse

from grading.models import GradingClaim, probabilities_entropy
from grading.selectors.worklist import worklist_ordered_ids
from tests.factories import image_make, patient_make
from tests.factories_grading import (
    GradingTestCase,
    grade_give,
    model_version_active_make,
    prediction_make,
    workbench_set,
)

URL = reverse("worklist")
NEXT_URL = reverse("worklist_next")


class WorklistPermissionTests(GradingTestCase):
    def test_clinicians_and_admins_see_the_worklist(self):
        self.assertStatusByUser(URL, alice=200, adam=200)

    def test_reviewers_and_users_without_a_role_are_refused(self):
        for user in (self.rita, self.nora):
            with self.subTest(user=user.username):
                self.login(user)
                self.assertEqual(self.client.get(URL).status_code, 403)
                self.assertEqual(self.client.post(NEXT_URL).status_code, 403)

    def test_the_home_page_of_clinicians_and_admins_leads_to_the_worklist(self):
        image_make()
        for user in (self.alice, self.adam):
            with self.subTest(user=user.username):
                self.login(user)
                response = self.client.get("/")
                self.assertEqual(response.status_code, 200)
                self.assertContains(response, f'href="{URL}"')
                self.assertContains(response, "Start grading")


class WorklistContentTests(GradingTestCase):
    def test_it_lists_only_images_still_needing_my_grade(self):
        workbench_set(grades_required=2)
        mine = image_make(patient=patient_make("P-WAITING"))
        graded_by_me = image_make(patient=patient_make("P-GRADED-BY-ME"))
        grade_give(graded_by_me, self.alice, 1)
        image_make(patient=patient_make("P-CONFIRMED"), confirmed_grade=1)
        self.login(self.alice)
        response = self.client.get(URL)
        self.assertContains(response, "P-WAITING")
        self.assertNotContains(response, "P-GRADED-BY-ME")
        self.assertNotContains(response, "P-CONFIRMED")
        self.assertContains(response, "1 image needs your grade")
        # Bob still needs to grade the image Alice graded.
        self.login(self.bob)
        self.assertContains(self.client.get(URL), "P-GRADED-BY-ME")
        self.assertTrue(mine.pk)

    def test_each_row_links_to_the_image_history(self):
        image = image_make()
        self.login(self.alice)
        response = self.client.get(URL)
        self.assertContains(response, f'href="{reverse("image_detail", args=[image.pk])}"')
        self.assertContains(response, f'href="{reverse("grade_image", args=[image.pk])}"')

    def test_the_empty_queue_says_so(self):
        self.login(self.alice)
        self.assertContains(self.client.get(URL), "Nothing left to grade")

    def test_the_user_can_override_the_queue_order_for_their_session(self):
        self.login(self.alice)
        response = self.client.get(URL, {"order": "uncertain"})
        self.assertRedirects(response, URL)
        self.assertContains(self.client.get(URL), "least sure about")
        self.client.get(URL, {"order": "default"})
        self.assertContains(self.client.get(URL), "longest-waiting")

    def test_an_unknown_order_is_refused_with_a_message(self):
        self.login(self.alice)
        response = self.client.get(URL, {"order": "sideways"}, follow=True)
        self.assertContains(response, "Unknown queue order")

    def test_the_admin_setting_chooses_the_default_order(self):
        workbench_set(queue_order="random")
        self.login(self.alice)
        self.assertContains(self.client.get(URL), "A random order of your own")


class QueueOrderTests(GradingTestCase):
    def test_oldest_first(self):
        images = [image_make() for _ in range(3)]
        self.assertEqual(
            worklist_ordered_ids(grader=self.alice, order="oldest"), [i.pk for i in images]
        )

    def test_random_is_stable_per_seed_and_differs_between_seeds(self):
        ids = [image_make().pk for _ in range(12)]
        first = worklist_ordered_ids(grader=self.alice, order="random", seed="a")
        self.assertEqual(sorted(first), sorted(ids))
        self.assertEqual(first, worklist_ordered_ids(grader=self.alice, order="random", seed="a"))
        self.assertNotEqual(
            first, worklist_ordered_ids(grader=self.alice, order="random", seed="b")
        )

    def test_most_uncertain_first_by_entropy_of_the_active_model(self):
        version = model_version_active_make()
        sure = image_make()
        unsure = image_make()
        middling = image_make()
        unpredicted = image_make()
        prediction_make(image=sure, version=version, probabilities=[0.96, 0.01, 0.01, 0.01, 0.01])
        prediction_make(image=unsure, version=version, probabilities=[0.2, 0.2, 0.2, 0.2, 0.2])
        prediction_make(image=middling, version=version, probabilities=[0.5, 0.4, 0.1, 0.0, 0.0])
        self.assertEqual(
            worklist_ordered_ids(grader=self.alice, order="uncertain"),
            [unsure.pk, middling.pk, sure.pk, unpredicted.pk],
        )

    def test_entropy_is_highest_for_a_uniform_prediction(self):
        self.assertAlmostEqual(probabilities_entropy([0.25] * 4), 1.3862943611)
        self.assertEqual(probabilities_entropy([1.0, 0.0]), 0.0)


class NextImageTests(GradingTestCase):
    def test_next_claims_an_image_and_redirects_to_its_grading_page(self):
        image = image_make()
        self.login(self.alice)
        response = self.client.post(NEXT_URL)
        self.assertRedirects(response, reverse("grade_image", args=[image.pk]))
        self.assertTrue(GradingClaim.objects.filter(image=image, grader=self.alice).exists())

    def test_a_second_clinician_is_not_served_the_claimed_image(self):
        first = image_make()
        second = image_make()
        self.login(self.alice)
        self.assertRedirects(self.client.post(NEXT_URL), reverse("grade_image", args=[first.pk]))
        self.login(self.bob)
        self.assertRedirects(self.client.post(NEXT_URL), reverse("grade_image", args=[second.pk]))

    def test_next_with_nothing_left_says_so(self):
        self.login(self.alice)
        response = self.client.post(NEXT_URL, follow=True)
        self.assertRedirects(response, URL)
        self.assertContains(response, "Nothing left to grade")

    def test_moving_on_from_an_ungraded_image_skips_it_and_frees_it(self):
        first = image_make()
        second = image_make()
        self.login(self.alice)
        self.client.post(NEXT_URL)
        response = self.client.post(NEXT_URL, {"from": first.pk})
        self.assertRedirects(response, reverse("grade_image", args=[second.pk]))
        self.assertFalse(GradingClaim.objects.filter(image=first, grader=self.alice).exists())
        self.assertContains(self.client.get(URL), "You skipped 1 image")
        # Putting skipped images back serves the first one again.
        self.client.get(URL, {"skipped": "clear"})
        GradingClaim.objects.all().delete()
        self.assertRedirects(self.client.post(NEXT_URL), reverse("grade_image", args=[first.pk]))

    def test_next_is_post_only(self):
        self.login(self.alice)
        self.assertEqual(self.client.get(NEXT_URL).status_code, 405)
