"""No request parameter can make the server fail: every GET parameter of every view (and the
worklist's POST ``from``) is thrown arbitrary strings by hypothesis, and must never get a 5xx.

The crafted inputs of the 2026-11-29 probe are checked by name first, then hypothesis explores.
"""

from __future__ import annotations

from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase as HypothesisTestCase

from grading.models import Job
from tests.base import MediaMixin
from tests.factories import image_make, patient_make, user_make
from tests.factories_grading import grade_give, model_version_active_make, prediction_make

PROBE_INPUTS = (
    "9999-12-31",
    "0001-01-01",
    "²",
    "١٢",
    "-1",
    "0",
    "9" * 40,
    "1e9",
    "2024-02-30",
    "\x00",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    " ",
    "%00",
    "uncertain",
    "-predicted",
)

# Every view that reads the query string, with the parameters it reads. Views that read none
# get random parameters anyway (they must ignore them).
PARAMS_BY_ROUTE: dict[str, tuple[str, ...]] = {
    "home": ("x",),
    "worklist": ("order", "skipped", "page"),
    "adjudication_queue": ("page",),
    "patients": ("q", "page"),
    "review": (
        "version",
        "date_by",
        "date_from",
        "date_to",
        "grader",
        "confirmed",
        "predicted",
        "disagreement",
        "sort",
        "page",
    ),
    "review_confusion_png": ("version", "date_by", "date_from", "date_to", "confirmed"),
    "review_qwk_chart_png": ("version", "date_by", "date_from", "date_to", "grader"),
    "grader_agreement": ("reference", "date_from", "date_to"),
    "export_predictions_csv": ("version",),
    "export_grades_csv": ("x",),
    "model_versions": ("x",),
    "model_compare": ("a", "b"),
    "jobs": ("x",),
    "workbench_settings": ("x",),
    "api_root": ("x",),
    "api_images": ("grading_state", "confirmed_grade", "patient", "version", "page", "page_size"),
    "api_image": ("version",),
    "audit_trail": ("page",),
    "job_detail": ("x",),
    "model_version_detail": ("x",),
    "api_model_versions": ("page", "page_size"),
    "api_model_version_predictions": ("predicted_grade", "page", "page_size"),
    "grade_image": ("x",),
    "image_detail": ("x",),
    "patient_detail": ("x",),
}

values = st.one_of(st.sampled_from(PROBE_INPUTS), st.text(max_size=40))


class NoServerErrorTests(MediaMixin, HypothesisTestCase):
    @classmethod
    def setUpTestData(cls):
        cls.adam = user_make("adam", "admin")
        cls.alice = user_make("alice", "clinician")
        cls.version = model_version_active_make("v1")
        cls.patient = patient_make("P-FUZZ")
        cls.image = image_make(patient=cls.patient, confirmed_grade=2)
        prediction_make(
            image=cls.image, version=cls.version, probabilities=[0.1, 0.1, 0.6, 0.1, 0.1]
        )
        cls.job = Job.objects.create(kind=Job.Kind.FEATURES_EXTRACT, state=Job.State.SUCCEEDED)
        pending = image_make(patient=cls.patient)
        grade_give(pending, cls.alice, 1)

    def _url(self, route: str) -> str:
        args = {
            "api_model_version_predictions": [self.version.name],
            "api_image": [self.image.pk],
            "job_detail": [self.job.pk],
            "model_version_detail": [self.version.pk],
            "grade_image": [self.image.pk],
            "image_detail": [self.image.pk],
            "patient_detail": [self.patient.pk],
        }.get(route, [])
        return reverse(route, args=args)

    def assertNoServerError(self, response, what: str) -> None:
        self.assertLess(response.status_code, 500, what)

    def test_the_probed_inputs_get_no_5xx(self):
        self.client.force_login(self.adam)
        for route, names in PARAMS_BY_ROUTE.items():
            url = self._url(route)
            for name in names:
                for value in PROBE_INPUTS:
                    response = self.client.get(url, {name: value})
                    self.assertNoServerError(response, f"{url}?{name}={value!r}")
        for value in ("\x00", "v1\x00", "%00"):
            url = reverse("api_model_version_predictions", args=[value])
            self.assertNoServerError(self.client.get(url), repr(url))
        self.client.force_login(self.alice)
        for value in PROBE_INPUTS:
            response = self.client.post(reverse("worklist_next"), {"from": value})
            self.assertNoServerError(response, f"POST worklist/next from={value!r}")

    @settings(
        max_examples=250,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(
        route=st.sampled_from(sorted(PARAMS_BY_ROUTE)),
        data=st.data(),
    )
    def test_arbitrary_strings_in_every_get_parameter_get_no_5xx(self, route, data):
        names = PARAMS_BY_ROUTE[route]
        params = data.draw(
            st.dictionaries(st.sampled_from(names), values, min_size=1, max_size=len(names))
        )
        self.client.force_login(self.adam)
        url = self._url(route)
        self.assertNoServerError(self.client.get(url, params), f"{url} {params!r}")

    @settings(max_examples=40, deadline=None, database=None)
    @given(came_from=values)
    def test_arbitrary_strings_as_the_worklist_from_get_no_5xx(self, came_from):
        self.client.force_login(self.alice)
        response = self.client.post(reverse("worklist_next"), {"from": came_from})
        self.assertNoServerError(response, repr(came_from))
