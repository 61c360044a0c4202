"""The review page: model predictions beside confirmed grades, filters, sorting, paging, metrics."""

from __future__ import annotations

from sklearn.metrics import cohen_kappa_score

from grading.models import Image, ModelVersion, Patient
from grading.selectors import review as review_selectors
from tests.base import BaseTestCase
from tests.factories_review import (
    at,
    grade_make,
    images_bulk_make,
    model_version_make,
    prediction_make,
)

# (confirmed, predicted) for ten images: worked out by hand below.
PAIRS = [(0, 0), (0, 0), (0, 1), (1, 1), (2, 2), (2, 1), (3, 3), (4, 2), (2, 2), (0, 0)]
# Accuracy: 7 of 10 exact. Referable (>= 2): 5 confirmed referable, 4 of them predicted referable
# (sensitivity 0.8); 5 non-referable, none predicted referable (specificity 1.0).
# QWK: rows (confirmed) [4,1,3,1,1], columns (predicted) [3,3,3,1,0], weights (i-j)^2/16.
# Observed weighted disagreement (1 + 1 + 4)/16 = 6/16; expected sum_ij r_i c_j (i-j)^2 / (16 * 10)
# = 284/160; QWK = 1 - (6/16)/(284/160) = 1 - 15/71 = 56/71.
EXPECTED_QWK = 56 / 71


class ReviewPageTests(BaseTestCase):
    """One constructed history shared by all tests (setUpTestData runs once per class)."""

    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        cls.active = model_version_make("v-active", state=ModelVersion.State.ACTIVE)
        cls.other = model_version_make("v-other")
        cls.images = images_bulk_make(
            len(PAIRS), confirmed_grades=[true for true, _ in PAIRS], uploaded=at(10, month=1)
        )
        # One patient per image: the review's intervals resample patients.
        for number, image in enumerate(cls.images):
            patient = Patient.objects.create(pseudonym=f"REVIEW{number:03d}")
            Image.objects.filter(pk=image.pk).update(patient=patient)
        for image, (true, predicted) in zip(cls.images, PAIRS, strict=True):
            prediction_make(
                image=image, model_version=cls.active, grade=predicted, created=at(5, month=2)
            )
            # The other version is always right: a different version must give different numbers.
            prediction_make(
                image=image, model_version=cls.other, grade=true, created=at(5, month=4)
            )
        # Predicted but not comparable: one unconfirmed image, one confirmed ungradable.
        unconfirmed, ungradable = images_bulk_make(2)
        Image.objects.filter(pk=ungradable.pk).update(
            grading_state=Image.GradingState.CONFIRMED, confirmed_ungradable=True
        )
        for image in (unconfirmed, ungradable):
            prediction_make(image=image, model_version=cls.active, grade=0)

    def get(self, **params):
        self.login(self.rita)
        return self.client.get("/review/", params)

    def shown_images(self, response) -> list[int]:
        return [prediction.image_id for prediction in response.context["page"].object_list]

    def test_it_lets_reviewers_and_admins_in_and_keeps_clinicians_out(self):
        self.login(self.alice)
        self.assertEqual(self.client.get("/review/").status_code, 403)
        self.login(self.nora)
        self.assertEqual(self.client.get("/review/").status_code, 403)
        self.login(self.adam)
        self.assertEqual(self.client.get("/review/").status_code, 200)
        self.assertEqual(self.get().status_code, 200)

    def test_it_links_each_row_to_the_image_page_and_graders_to_the_grading_page(self):
        image_url = f'href="/images/{self.images[0].pk}/"'
        grade_url = f'href="/grade/{self.images[0].pk}/"'
        response = self.get()
        self.assertContains(response, image_url)
        self.assertNotContains(response, grade_url)  # a reviewer cannot grade
        self.login(self.adam)
        response = self.client.get("/review/")
        self.assertContains(response, image_url)
        self.assertContains(response, grade_url)

    def test_it_computes_the_metrics_worked_out_by_hand(self):
        report = self.get().context["report"]
        self.assertEqual(report["n"], 10)
        self.assertAlmostEqual(report["accuracy"], 0.7)
        self.assertAlmostEqual(report["qwk"], EXPECTED_QWK)
        self.assertAlmostEqual(report["referable"]["sensitivity"], 0.8)
        self.assertAlmostEqual(report["referable"]["specificity"], 1.0)
        self.assertEqual(report["referable"]["positives"], 5)
        self.assertEqual(
            report["confusion"],
            [
                [3, 1, 0, 0, 0],
                [0, 1, 0, 0, 0],
                [0, 1, 2, 0, 0],
                [0, 0, 0, 1, 0],
                [0, 0, 1, 0, 0],
            ],
        )

    def test_the_hand_computed_kappa_matches_scikit_learn(self):
        true, predicted = zip(*PAIRS, strict=True)
        self.assertAlmostEqual(
            cohen_kappa_score(true, predicted, weights="quadratic"), EXPECTED_QWK
        )

    def test_it_shows_the_metrics_on_the_page(self):
        response = self.get()
        self.assertContains(response, 'data-metric="qwk">0.789<')
        self.assertContains(response, 'data-metric="accuracy">0.700<')
        self.assertContains(response, 'data-metric="n">10<')

    def test_it_gives_each_figure_of_a_small_set_its_interval(self):
        report = self.get().context["report"]
        for key in ("qwk", "accuracy"):
            low, high = report["intervals"][key]
            self.assertLessEqual(low, report[key])
            self.assertGreaterEqual(high, report[key])
        # 7 of 10 right: the Wilson interval is wide, and the page says so.
        self.assertContains(self.get(), 'data-interval="accuracy">95 % CI [0.397')

    def test_it_leaves_out_and_counts_unconfirmed_and_ungradable_images(self):
        response = self.get()
        self.assertEqual(response.context["page"].paginator.count, 10)
        self.assertEqual(
            response.context["not_compared"],
            {
                "ungradable": 1,
                "unconfirmed": 1,
                "training": 0,
                "training_included": 0,
                "abstained": 0,
                "answered": 10,
                "comparable": 10,
                "abstention_rate": 0.0,
                "abstention_percent": 0.0,
            },
        )

    def test_a_chosen_version_is_measured_instead_of_the_active_one(self):
        report = self.get(version=self.other.pk).context["report"]
        self.assertEqual(report["accuracy"], 1.0)
        self.assertEqual(report["qwk"], 1.0)

    def test_metrics_follow_the_filters_and_warn_when_they_select_on_grades(self):
        response = self.get(confirmed=2)
        report = response.context["report"]
        self.assertEqual(report["n"], 3)
        self.assertAlmostEqual(report["accuracy"], 2 / 3)
        self.assertContains(response, "describe that selection")

    def test_the_confusion_matrix_is_drawn_as_a_png(self):
        self.login(self.rita)
        response = self.client.get("/review/confusion.png", {"disagreement": 1})
        self.assertEqual(response["Content-Type"], "image/png")
        self.assertEqual(response.content[:8], b"\x89PNG\r\n\x1a\n")

    def test_the_qwk_trend_has_one_point_per_version_and_month(self):
        series = self.get().context["series"]
        by_name = {entry.model_version.name: entry for entry in series}
        self.assertEqual(set(by_name), {"v-active", "v-other"})
        (point,) = by_name["v-active"].points  # all images were uploaded in January
        self.assertEqual((point.month.year, point.month.month, point.n), (2025, 1, 10))
        self.assertAlmostEqual(point.qwk, EXPECTED_QWK)
        self.login(self.rita)
        response = self.client.get("/review/qwk-by-month.png")
        self.assertEqual(response.content[:8], b"\x89PNG\r\n\x1a\n")

    def test_the_trend_splits_months_by_prediction_date_when_asked(self):
        series = self.get(date_by="predicted").context["series"]
        months = {
            entry.model_version.name: [p.month.month for p in entry.points] for entry in series
        }
        self.assertEqual(months, {"v-active": [2], "v-other": [4]})

    def test_it_filters_disagreements_by_one_or_two_grades(self):
        off_by_one = self.shown_images(self.get(disagreement=1))
        self.assertEqual(
            sorted(off_by_one),
            sorted(image.pk for image, (t, p) in zip(self.images, PAIRS, strict=True) if t != p),
        )
        self.assertEqual(self.shown_images(self.get(disagreement=2)), [self.images[7].pk])

    def test_it_filters_by_confirmed_and_predicted_grade(self):
        self.assertEqual(len(self.shown_images(self.get(confirmed=0))), 4)
        self.assertEqual(
            sorted(self.shown_images(self.get(predicted=1))),
            sorted([self.images[2].pk, self.images[3].pk, self.images[5].pk]),
        )
        self.assertEqual(self.shown_images(self.get(confirmed=4, predicted=2)), [self.images[7].pk])

    def test_it_filters_by_upload_or_prediction_date(self):
        self.assertEqual(len(self.shown_images(self.get(date_from="2025-01-10"))), 10)
        self.assertEqual(len(self.shown_images(self.get(date_to="2025-01-09"))), 0)
        predicted = {"date_by": "predicted", "date_from": "2025-02-05", "date_to": "2025-02-05"}
        self.assertEqual(len(self.shown_images(self.get(**predicted))), 10)
        predicted["date_from"] = predicted["date_to"] = "2025-02-06"
        self.assertEqual(len(self.shown_images(self.get(**predicted))), 0)

    def test_it_filters_by_grader(self):
        grade_make(image=self.images[4], grader=self.alice, value=2)
        grade_make(image=self.images[5], grader=self.bob, value=1)
        self.assertEqual(self.shown_images(self.get(grader=self.alice.pk)), [self.images[4].pk])

    def test_it_rejects_a_reversed_date_range_with_a_message(self):
        response = self.get(date_from="2025-03-01", date_to="2025-02-01")
        self.assertEqual(response.status_code, 400)
        self.assertContains(response, "The start date is after the end date.", status_code=400)

    def test_an_htmx_request_gets_only_the_results(self):
        self.login(self.rita)
        response = self.client.get("/review/", {"disagreement": 2}, headers={"HX-Request": "true"})
        self.assertNotContains(response, "<html")
        self.assertContains(response, 'id="table-heading"')
        self.assertEqual(self.shown_images(response), [self.images[7].pk])
        self.assertIn("HX-Request", response["Vary"])
        restore = {"HX-Request": "true", "HX-History-Restore-Request": "true"}
        self.assertContains(self.client.get("/review/", headers=restore), "<html")

    def test_it_sorts_by_largest_disagreement_first_by_default(self):
        differences = [p.disagreement for p in self.get().context["page"].object_list]
        self.assertEqual(differences, sorted(differences, reverse=True))
        self.assertEqual(differences[0], 2)

    def test_it_sorts_by_a_chosen_column_both_ways(self):
        ascending = [p.image.confirmed_grade_id for p in self.get(sort="confirmed").context["page"]]
        self.assertEqual(ascending, sorted(ascending))
        descending = [p.predicted_grade_id for p in self.get(sort="-predicted").context["page"]]
        self.assertEqual(descending, sorted(descending, reverse=True))

    def test_an_unknown_sort_is_refused(self):
        self.assertEqual(self.get(sort="password").status_code, 400)

    def test_it_pages_fifty_rows_at_a_time(self):
        extra = images_bulk_make(55, confirmed_grades=[1] * 55)
        for image in extra:
            prediction_make(image=image, model_version=self.active, grade=1)
        first = self.get(sort="image")
        self.assertEqual(len(first.context["page"].object_list), 50)
        self.assertEqual(first.context["page"].paginator.num_pages, 2)
        self.assertContains(first, "page=2")
        second = self.get(sort="image", page=2)
        self.assertEqual(len(second.context["page"].object_list), 15)
        shown = self.shown_images(first) + self.shown_images(second)
        self.assertEqual(len(set(shown)), 65)


class ReviewEmptyTests(BaseTestCase):
    def test_it_explains_that_there_is_no_model_yet(self):
        self.login(self.rita)
        response = self.client.get("/review/")
        self.assertContains(response, "No model version has predicted any image yet.")

    def test_the_default_version_is_the_newest_with_predictions_when_none_is_active(self):
        version = model_version_make("candidate-only")
        model_version_make("no-predictions")
        (image,) = images_bulk_make(1, confirmed_grades=[0])
        prediction_make(image=image, model_version=version, grade=0)
        self.assertEqual(review_selectors.model_version_default(), version)
