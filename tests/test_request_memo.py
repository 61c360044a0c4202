"""The per-request memo: the workbench settings, the grading scale and the certification set are
read once per request, a change made during the request is seen by the rest of it, and nothing
is remembered between requests or outside one."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.test import RequestFactory

from grading.request_memo import RequestMemoMiddleware
from grading.selectors.certification import certification_image_ids
from grading.selectors.grading_scale import scale_get
from grading.selectors.worklist import workbench_settings_get
from grading.services.certification import certification_items_add
from grading.services.workbench import workbench_settings_update
from tests.factories import image_make
from tests.factories_grading import GradingTestCase, grade_give


def in_request(view):
    """Run ``view()`` as the body of one request through the middleware; returns its result."""
    seen = {}

    def handler(request):
        seen["result"] = view()
        return HttpResponse()

    RequestMemoMiddleware(handler)(RequestFactory().get("/"))
    return seen["result"]


class RequestMemoTests(GradingTestCase):
    def test_a_request_reads_the_settings_the_scale_and_the_set_once(self):
        def view():
            with self.assertNumQueries(3):
                for _ in range(3):
                    workbench_settings_get()
                    scale_get()
                    certification_image_ids()

        in_request(view)

    def test_a_change_during_the_request_is_seen_by_the_rest_of_it(self):
        image = image_make()
        grade_give(image, self.alice, 2)

        def view():
            before = workbench_settings_get().grades_required
            workbench_settings_update(grades_required=before + 1)
            added = certification_image_ids()
            certification_items_add(image_ids=[image.pk], added_by=self.adam)
            return (
                before,
                workbench_settings_get().grades_required,
                added,
                certification_image_ids(),
            )

        before, after, set_before, set_after = in_request(view)
        self.assertEqual(after, before + 1)
        self.assertNotIn(image.pk, set_before)
        self.assertIn(image.pk, set_after)

    def test_a_refused_change_leaves_no_half_edited_row_in_the_memo(self):
        def view():
            workbench_settings_get()
            with self.assertRaises(ValidationError):
                workbench_settings_update(grades_required=0)
            return workbench_settings_get().grades_required

        self.assertEqual(in_request(view), 1)

    def test_nothing_is_remembered_outside_a_request(self):
        with self.assertNumQueries(2):
            workbench_settings_get()
            workbench_settings_get()
