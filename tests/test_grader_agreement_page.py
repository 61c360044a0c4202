"""The grader agreement page: results before the method, and a reason whenever a clinician has
no image compared."""

from __future__ import annotations

from django.urls import reverse

from grading.models import Image
from tests.base import BaseTestCase
from tests.factories_review import at, grade_make, image_confirm, images_bulk_make

METHOD = Image.ConfirmationMethod
URL = reverse("grader_agreement")


class GraderAgreementPageTests(BaseTestCase):
    def test_a_grader_whose_grades_alone_decided_is_told_why_none_is_compared(self):
        for image in images_bulk_make(2):
            grade_make(image=image, grader=self.adam, value=1, created=at(1))
            image_confirm(image=image, method=METHOD.SINGLE, value=1, when=at(1, 13))
        self.login(self.adam)
        response = self.client.get(URL)
        html = response.content.decode()
        self.assertIn('data-none-compared="adam"', html)
        self.assertIn("each of adam's 2 grades alone decided the confirmed grade", html)
        self.assertIn(f'href="{reverse("workbench_settings")}"', html)  # an admin can change it
        # The results come before the explanation of the method.
        self.assertLess(html.index('id="graders-heading"'), html.index('id="method-heading"'))

    def test_the_independent_reference_explains_the_agreement_it_leaves_out(self):
        image = images_bulk_make(1)[0]
        grade_make(image=image, grader=self.alice, value=1, created=at(2))
        grade_make(image=image, grader=self.bob, value=1, created=at(2, 13))
        image_confirm(image=image, method=METHOD.AGREEMENT, value=1, when=at(2, 13))
        self.login(self.rita)
        response = self.client.get(URL, {"reference": "independent"})
        self.assertContains(response, "Choose “Final grade”")
        self.assertNotContains(response, f'href="{reverse("workbench_settings")}"')

    def test_with_no_grades_at_all_it_says_what_fills_the_page(self):
        self.login(self.adam)
        response = self.client.get(URL)
        self.assertContains(response, "Nothing to compare yet.")
        self.assertContains(response, "images imported with reference grades")
