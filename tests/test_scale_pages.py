"""Every page on a small ``seed_scale`` installation, with its number of SQL queries pinned: a page
whose query count grew with the data (a query per row) would fail here long before 100,000 images.
Timings are measured by ``bench/pages.py``, not here."""

from __future__ import annotations

import tempfile
from io import StringIO
from pathlib import Path

from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.db.models import Count
from django.test import TestCase
from django.test.utils import CaptureQueriesContext

from grading.models import Grade, Image, Job, ModelVersion, Patient
from tests.base import MediaMixin

# (name, user, method, url builder, queries). The counts include the session, the user and the
# permissions (one query: grading.auth_backend) every page reads; the workbench settings and the
# grading scale are read once per request (grading.request_memo), and "Next image" and the grading
# page renew a claim only when needed (issue 21: next image 28 -> 18, grading page 29 -> 12). The grading protocol (issue 14) adds a constant few: the
# certification set and the quality-check count on the worklist (+3), the certification check
# before "next image" (+1), on the grading page the certification item, the reference-hidden
# images and the rubric's scale check (+5), and the reference-hidden images on patient pages (+1).
PAGES = [
    ("worklist", "grader", "GET", lambda d: "/worklist/", 14),
    ("worklist page 2", "grader", "GET", lambda d: "/worklist/?page=2", 14),
    ("next image", "grader", "POST", lambda d: "/worklist/next/", 18),
    ("grading page", "grader", "GET", lambda d: f"/grade/{d['pending']}/", 12),
    ("image history", "reviewer", "GET", lambda d: f"/images/{d['confirmed']}/", 9),
    ("patients", "grader", "GET", lambda d: "/patients/", 9),
    ("a patient", "grader", "GET", lambda d: f"/patients/{d['patient']}/", 9),
    # + the ids of the flagged page before its rows (IdsFirstPaginator).
    ("adjudication", "reviewer", "GET", lambda d: "/adjudication/", 13),
    # Review: + the per-patient confusion matrices its intervals resample (cached like the rest).
    ("review", "reviewer", "GET", lambda d: "/review/", 20),
    (
        "review filtered",
        "reviewer",
        "GET",
        lambda d: f"/review/?version={d['v1']}&disagreement=1",
        20,
    ),
    ("review by grader", "reviewer", "GET", lambda d: f"/review/?grader={d['grader_id']}", 21),
    ("grader agreement", "reviewer", "GET", lambda d: "/review/graders/", 8),
    # Registry and version page: + the open cross-validation job(s), for "evaluating… n %",
    # + the latest training job, for the duration the jobs page gives: every version's in one query
    # on the registry, the version's own on its page.
    ("registry", "admin", "GET", lambda d: "/models/", 13),
    ("a model version", "admin", "GET", lambda d: f"/models/{d['v2']}/", 11),
    ("jobs", "admin", "GET", lambda d: "/jobs/", 6),
    ("a job", "admin", "GET", lambda d: f"/jobs/{d['job']}/", 5),
    # API pages beyond the only one read their ids first (IdsFirstPaginator): +1.
    ("api images", "reviewer", "GET", lambda d: "/api/images/", 8),
    (
        "api predictions",
        "reviewer",
        "GET",
        lambda d: "/api/model-versions/scale-v2/predictions/",
        8,  # + the count of training images left out (training_images_excluded)
    ),
]


class ScalePagesQueryCountTests(MediaMixin, TestCase):
    @classmethod
    def setUpTestData(cls):
        call_command(
            "seed_scale",
            images=160,
            graders=4,
            password="scale-pass-123",
            photos_dir=Path(tempfile.mkdtemp(prefix="funduscope-no-photos-")),
            stdout=StringIO(),
        )
        cls.users = {
            "grader": User.objects.get(username="scale-grader01"),
            "reviewer": User.objects.get(username="scale-reviewer"),
            "admin": User.objects.get(username="scale-admin"),
        }
        cls.ids = {
            "pending": Image.objects.filter(grading_state="pending").order_by("id").last().pk,
            "confirmed": Image.objects.filter(grading_state="confirmed").order_by("id")[0].pk,
            "patient": Patient.objects.annotate(n=Count("images")).filter(n__gt=4)[0].pk,
            "v1": ModelVersion.objects.get(name="scale-v1").pk,
            "v2": ModelVersion.objects.get(name="scale-v2").pk,
            "grader_id": Grade.objects.filter(kind="grader").order_by("id")[0].grader_id,
            "job": Job.objects.order_by("id")[0].pk,
        }

    def setUp(self):
        cache.clear()  # the review's aggregates are cached: count a cold request

    def _request(self, method: str, target: str, previous: dict[str, str]):
        if method == "POST":
            # "Next image" from the image served last: it is skipped and the next one claimed.
            response = self.client.post(target, {"from": previous.get(target, "")})
            previous[target] = response["Location"].rstrip("/").rsplit("/", 1)[-1]
            return response
        return self.client.get(target)

    def test_it_keeps_every_page_to_a_fixed_number_of_queries(self):
        for name, who, method, url, queries in PAGES:
            with self.subTest(page=name):
                self.client.force_login(self.users[who])
                target, previous = url(self.ids), {}
                self._request(method, target, previous)  # the session's first visit writes it
                cache.clear()
                with CaptureQueriesContext(connection) as captured:
                    response = self._request(method, target, previous)
                self.assertLess(response.status_code, 400, target)
                self.assertEqual(len(captured), queries, f"{name}: {len(captured)} queries")

    def test_the_review_reuses_its_aggregates_until_a_grade_changes(self):
        self.client.force_login(self.users["reviewer"])
        self.client.get("/review/")
        with self.assertNumQueries(13):  # the metrics, months and counts come from the cache
            self.client.get("/review/")
        image = Image.objects.filter(grading_state="pending").first()
        Grade.objects.create(image=image, grader=self.users["grader"], grade_id=1)
        with self.assertNumQueries(20):
            self.client.get("/review/")
