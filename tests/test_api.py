"""The read-only JSON API: authentication, permissions, contents and paging."""

from __future__ import annotations

import io

from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from grading.models import Image, ModelVersion
from tests.base import BaseTestCase
from tests.factories import patient_make
from tests.factories_review import (
    at,
    images_bulk_make,
    model_version_make,
    prediction_make,
)


class ApiTestCase(BaseTestCase):
    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        cls.patient = patient_make("API-1")
        cls.images = images_bulk_make(3, confirmed_grades=[0, 2, None], patient=cls.patient)
        cls.old = model_version_make("v1", state=ModelVersion.State.RETIRED)
        cls.new = model_version_make("v2", state=ModelVersion.State.ACTIVE)
        prediction_make(image=cls.images[0], model_version=cls.old, grade=1, created=at(1))
        prediction_make(image=cls.images[0], model_version=cls.new, grade=0, created=at(2))
        prediction_make(image=cls.images[1], model_version=cls.old, grade=3, created=at(1))

    def setUp(self):
        self.api = APIClient()

    def as_user(self, user) -> APIClient:
        self.api.force_authenticate(user)
        return self.api


class ApiAuthTests(ApiTestCase):
    def test_anonymous_requests_get_401(self):
        for url in ("/api/images/", "/api/model-versions/", "/api/model-versions/v1/predictions/"):
            response = self.api.get(url)
            self.assertEqual(response.status_code, 401, url)
            self.assertEqual(response["WWW-Authenticate"], "Token")

    def test_a_token_authenticates(self):
        token = Token.objects.create(user=self.rita)
        self.api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        self.assertEqual(self.api.get("/api/images/").status_code, 200)
        self.api.credentials(HTTP_AUTHORIZATION="Token not-a-token")
        self.assertEqual(self.api.get("/api/images/").status_code, 401)

    def test_the_browser_session_authenticates(self):
        self.client.force_login(self.rita)
        response = self.client.get("/api/images/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Content-Type"], "application/json")

    def test_an_account_without_a_role_is_refused(self):
        self.assertEqual(self.as_user(self.nora).get("/api/images/").status_code, 403)

    def test_a_clinician_cannot_read_predictions_that_blind_grading_hides(self):
        api = self.as_user(self.alice)
        self.assertEqual(api.get("/api/images/").status_code, 403)
        self.assertEqual(api.get("/api/model-versions/v1/predictions/").status_code, 403)

    def test_the_api_is_read_only(self):
        response = self.as_user(self.adam).post("/api/images/", {}, format="json")
        self.assertEqual(response.status_code, 405)

    def test_drf_create_token_makes_a_token_for_a_user(self):
        out = io.StringIO()
        call_command("drf_create_token", "rita", stdout=out)
        key = Token.objects.get(user=self.rita).key
        self.assertIn(key, out.getvalue())


class ApiRootTests(ApiTestCase):
    def test_it_lists_the_endpoints_as_json_to_a_reviewer(self):
        self.client.force_login(self.rita)
        response = self.client.get("/api/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Content-Type"], "application/json")
        body = response.json()
        self.assertEqual(body["images"], "http://testserver/api/images/")
        self.assertEqual(body["model_versions"], "http://testserver/api/model-versions/")
        self.assertEqual(
            body["model_version_predictions"],
            "http://testserver/api/model-versions/{name}/predictions/",
        )
        self.assertIn("version", body["parameters"]["images"])

    def test_it_answers_401_and_403_like_the_endpoints(self):
        self.assertEqual(self.api.get("/api/").status_code, 401)
        self.assertEqual(self.as_user(self.alice).get("/api/").status_code, 403)
        self.assertEqual(self.as_user(self.adam).get("/api/").status_code, 200)


class ApiImageTests(ApiTestCase):
    def test_images_carry_the_confirmed_grade_and_the_active_versions_prediction(self):
        body = self.as_user(self.rita).get("/api/images/").json()
        self.assertEqual(body["count"], 3)
        first, second, third = body["results"]
        self.assertEqual(first["id"], self.images[0].pk)
        self.assertEqual(first["sha256"], self.images[0].sha256)
        self.assertEqual(first["patient"], "API-1")
        self.assertEqual(first["confirmed_grade"], 0)
        self.assertEqual(first["grading_state"], "confirmed")
        latest = first["latest_prediction"]
        self.assertEqual((latest["model_version"], latest["predicted_grade"]), ("v2", 0))
        self.assertEqual(len(latest["probabilities"]), 5)
        # Only the retired v1 predicted the second image: the active version has no prediction.
        self.assertIsNone(second["latest_prediction"])
        self.assertIsNone(third["confirmed_grade"])
        self.assertIsNone(third["latest_prediction"])

    def test_images_filter_by_state_grade_and_patient(self):
        api = self.as_user(self.rita)
        pending = api.get("/api/images/", {"grading_state": "pending"}).json()
        self.assertEqual([row["id"] for row in pending["results"]], [self.images[2].pk])
        graded = api.get("/api/images/", {"confirmed_grade": 2}).json()
        self.assertEqual([row["id"] for row in graded["results"]], [self.images[1].pk])
        self.assertEqual(api.get("/api/images/", {"patient": "nobody"}).json()["count"], 0)

    def test_bad_filters_get_a_clear_400(self):
        api = self.as_user(self.rita)
        response = api.get("/api/images/", {"confirmed_grade": 9})
        self.assertEqual(response.status_code, 400)
        self.assertIn("is not a grade of the scale", response.json()["confirmed_grade"])
        response = api.get("/api/images/", {"grading_state": "done"})
        self.assertEqual(response.status_code, 400)

    def test_a_page_of_images_takes_a_fixed_number_of_queries(self):
        images_bulk_make(40, confirmed_grades=[1] * 40)
        api = self.as_user(self.rita)
        with CaptureQueriesContext(connection) as queries:
            self.assertEqual(len(api.get("/api/images/").json()["results"]), 43)
        # Permissions (user, groups), count, images with patients, their predictions.
        self.assertLessEqual(len(queries), 6, [q["sql"][:80] for q in queries])

    def test_a_query_parameter_asks_for_another_versions_prediction(self):
        api = self.as_user(self.rita)
        body = api.get("/api/images/", {"version": "v1"}).json()
        first, second, third = body["results"]
        self.assertEqual(
            (
                first["latest_prediction"]["model_version"],
                first["latest_prediction"]["predicted_grade"],
            ),
            ("v1", 1),
        )
        self.assertEqual(second["latest_prediction"]["predicted_grade"], 3)
        self.assertIsNone(third["latest_prediction"])
        response = api.get("/api/images/", {"version": "v9"})
        self.assertEqual(response.status_code, 400)
        self.assertIn("There is no model version named v9", response.json()["version"][0])

    def test_no_active_version_means_no_prediction_unless_one_is_asked_for(self):
        ModelVersion.objects.filter(name="v2").update(state=ModelVersion.State.RETIRED)
        api = self.as_user(self.rita)
        body = api.get("/api/images/").json()
        self.assertTrue(all(row["latest_prediction"] is None for row in body["results"]))
        one = api.get(f"/api/images/{self.images[0].pk}/", {"version": "v2"}).json()
        self.assertEqual(one["latest_prediction"]["model_version"], "v2")

    def test_one_image(self):
        api = self.as_user(self.rita)
        body = api.get(f"/api/images/{self.images[1].pk}/").json()
        self.assertEqual(body["confirmed_grade"], 2)
        self.assertIsNone(body["latest_prediction"])  # only the retired v1 predicted it
        body = api.get(f"/api/images/{self.images[1].pk}/", {"version": "v1"}).json()
        self.assertEqual(body["latest_prediction"]["predicted_grade"], 3)
        self.assertEqual(api.get("/api/images/999999/").status_code, 404)

    def test_images_are_paged(self):
        images_bulk_make(120, confirmed_grades=[1] * 120)
        api = self.as_user(self.rita)
        first = api.get("/api/images/").json()
        self.assertEqual(first["count"], 123)
        self.assertEqual(len(first["results"]), 100)  # REST_FRAMEWORK["PAGE_SIZE"]
        self.assertIn("page=2", first["next"])
        second = api.get(first["next"]).json()
        self.assertEqual(len(second["results"]), 23)
        self.assertIsNone(second["next"])
        ids = [row["id"] for row in first["results"] + second["results"]]
        self.assertEqual(len(set(ids)), 123)
        self.assertEqual(ids, sorted(ids))  # a page's ids are read first, then its rows in order
        self.assertEqual(first["results"][0]["latest_prediction"]["predicted_grade"], 0)
        small = api.get("/api/images/", {"page_size": 10}).json()
        self.assertEqual(len(small["results"]), 10)
        self.assertEqual(api.get("/api/images/", {"page": 99}).status_code, 404)


class ApiModelVersionTests(ApiTestCase):
    def test_model_versions_are_listed(self):
        body = self.as_user(self.rita).get("/api/model-versions/").json()
        self.assertEqual(
            [(row["name"], row["state"]) for row in body["results"]],
            [("v2", "active"), ("v1", "retired")],
        )

    def test_predictions_by_model_version(self):
        api = self.as_user(self.rita)
        body = api.get("/api/model-versions/v1/predictions/").json()
        self.assertEqual(body["count"], 2)
        first = body["results"][0]
        self.assertEqual(first["image"], self.images[0].pk)
        self.assertEqual(first["image_sha256"], self.images[0].sha256)
        self.assertEqual((first["model_version"], first["predicted_grade"]), ("v1", 1))
        self.assertEqual(first["confirmed_grade"], 0)
        only_3 = api.get("/api/model-versions/v1/predictions/", {"predicted_grade": 3}).json()
        self.assertEqual([row["image"] for row in only_3["results"]], [self.images[1].pk])
        self.assertEqual(api.get("/api/model-versions/nope/predictions/").status_code, 404)

    def test_predictions_are_paged(self):
        extra = images_bulk_make(105)
        for image in extra:
            prediction_make(image=image, model_version=self.new, grade=2)
        body = self.as_user(self.rita).get("/api/model-versions/v2/predictions/").json()
        self.assertEqual(body["count"], 106)
        self.assertEqual(len(body["results"]), 100)
        self.assertIsNotNone(body["next"])
        self.assertEqual(Image.objects.count(), 108)


# What Chromium sends when it opens a page.
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


class ApiBrowserDenialTests(ApiTestCase):
    def test_a_clinicians_browser_gets_the_friendly_403_page_naming_the_role(self):
        self.client.force_login(self.alice)
        response = self.client.get("/api/", HTTP_ACCEPT=BROWSER_ACCEPT)
        self.assertEqual(response.status_code, 403)
        self.assertTrue(response["Content-Type"].startswith("text/html"))
        self.assertContains(response, "reviewer", status_code=403)
        self.assertContains(response, "<nav", status_code=403)

    def test_an_api_client_still_gets_json(self):
        self.client.force_login(self.alice)
        response = self.client.get("/api/images/", HTTP_ACCEPT="application/json")
        self.assertEqual(response.status_code, 403)
        self.assertIn("detail", response.json())
