"""Honest numbers: the review page, its charts, the API and the exports leave out the images a
version was trained on unless asked, and say how many they left out."""

from __future__ import annotations

import csv
import io

from rest_framework.test import APIClient

from grading.models import ModelVersion
from grading.selectors import review as review_selectors
from tests.base import BaseTestCase
from tests.factories_review import at, images_bulk_make, model_version_make, prediction_make

# Images the version never trained on: (confirmed, predicted), two of four exact.
UNSEEN = [(0, 0), (2, 2), (0, 2), (3, 1)]
# Images it trained on: it learnt them, so it is always right there.
TRAINED = [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (2, 2)]


class TrainingImagesLeftOutTests(BaseTestCase):
    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        cls.version = model_version_make("v-honest", state=ModelVersion.State.ACTIVE)
        pairs = UNSEEN + TRAINED
        images = images_bulk_make(
            len(pairs), confirmed_grades=[true for true, _ in pairs], uploaded=at(3)
        )
        for index, (image, (_, predicted)) in enumerate(zip(images, pairs, strict=True)):
            prediction_make(
                image=image,
                model_version=cls.version,
                grade=predicted,
                created=at(4),
                in_training=index >= len(UNSEEN),
            )

    def get(self, path: str = "/review/", **params):
        self.login(self.rita)
        return self.client.get(path, params)

    def test_it_compares_only_images_the_version_never_trained_on_by_default(self):
        response = self.get()
        report = response.context["report"]
        self.assertEqual(report["n"], len(UNSEEN))
        self.assertAlmostEqual(report["accuracy"], 0.5)
        self.assertEqual(response.context["page"].paginator.count, len(UNSEEN))
        self.assertEqual(response.context["not_compared"]["training"], len(TRAINED))
        self.assertContains(response, 'data-count="training-excluded">6</strong>', html=False)
        self.assertContains(response, "never trained on")

    def test_including_training_images_is_an_explicit_option_labelled_optimistic(self):
        response = self.get(include_training="on")
        report = response.context["report"]
        self.assertEqual(report["n"], len(UNSEEN) + len(TRAINED))
        self.assertAlmostEqual(report["accuracy"], 0.8)
        self.assertContains(response, "Optimistic")
        self.assertContains(response, 'data-count="training-included">6</strong>', html=False)
        self.assertContains(response, "Include training images (optimistic)")

    def test_the_qwk_trend_leaves_training_images_out_unless_asked(self):
        default = review_selectors.ReviewFilters(model_version=self.version)
        series = review_selectors.review_qwk_by_month(filters=default)
        self.assertEqual(series[0].n, len(UNSEEN))
        optimistic = review_selectors.ReviewFilters(
            model_version=self.version, include_training=True
        )
        self.assertEqual(
            review_selectors.review_qwk_by_month(filters=optimistic)[0].n,
            len(UNSEEN) + len(TRAINED),
        )

    def test_the_confusion_chart_follows_the_same_choice(self):
        for params in ({}, {"include_training": "on"}):
            with self.subTest(params=params):
                response = self.get("/review/confusion.png", **params)
                self.assertEqual(response["Content-Type"], "image/png")

    def test_the_api_lists_only_unseen_images_and_says_how_many_it_left_out(self):
        api = APIClient()
        api.force_authenticate(self.rita)
        url = "/api/model-versions/v-honest/predictions/"
        default = api.get(url).json()
        self.assertEqual(default["count"], len(UNSEEN))
        self.assertEqual(default["training_images_excluded"], len(TRAINED))
        self.assertFalse(any(row["in_training"] for row in default["results"]))
        everything = api.get(url, {"include_training": "true"}).json()
        self.assertEqual(everything["count"], len(UNSEEN) + len(TRAINED))
        self.assertEqual(everything["training_images_excluded"], 0)
        self.assertEqual(api.get(url, {"include_training": "maybe"}).status_code, 400)

    def test_the_export_leaves_training_images_out_unless_asked(self):
        self.login(self.rita)
        response = self.client.get("/export/predictions.csv", {"version": self.version.pk})
        rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
        self.assertEqual(len(rows), len(UNSEEN))
        self.assertEqual({row["in_training"] for row in rows}, {"0"})
        self.assertEqual(response["X-Training-Images-Excluded"], str(len(TRAINED)))
        response = self.client.get(
            "/export/predictions.csv", {"version": self.version.pk, "include_training": "on"}
        )
        rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
        self.assertEqual(len(rows), len(UNSEEN) + len(TRAINED))
        self.assertIn("with-training-images", response["Content-Disposition"])
