"""The model abstains on a photograph below the gradability threshold or outside its training
domain: the model panel says so instead of a grade, the worklist and Review count it apart."""

from __future__ import annotations

from django.test import override_settings
from django.urls import reverse

from grading.models import Image, Prediction
from grading.selectors.abstention import (
    REASON_GRADABILITY,
    REASON_OUT_OF_DOMAIN,
    prediction_abstention_reason,
)
from grading.selectors.review import ReviewFilters, review_summary
from grading.selectors.worklist import worklist_ordered_ids
from tests.factories import image_make
from tests.factories_grading import (
    GradingTestCase,
    model_version_active_make,
    prediction_make,
    workbench_set,
)
from tests.factories_review import image_confirm, images_bulk_make
from tests.factories_review import prediction_make as review_prediction_make

CONFIDENT_PDR = [0.01, 0.01, 0.01, 0.03, 0.94]
ABSTAINS = "Photo not gradable by the model"


def _mark(prediction: Prediction, *, quality: float | None = None, ood: float | None = None):
    Image.objects.filter(pk=prediction.image_id).update(quality_score=quality)
    Prediction.objects.filter(pk=prediction.pk).update(ood_score=ood)
    return Prediction.objects.select_related("image").get(pk=prediction.pk)


@override_settings(FUNDUS_QUALITY_GATE=True)
class ModelPanelAbstentionTests(GradingTestCase):
    def setUp(self):
        self.version = model_version_active_make()
        self.image = image_make()
        self.prediction = prediction_make(
            image=self.image, version=self.version, probabilities=CONFIDENT_PDR
        )
        workbench_set(blind_first_grader=False)  # assisted reading: the panel shows at once
        self.url = reverse("grade_image", args=[self.image.pk])
        self.login(self.alice)

    def test_it_abstains_below_the_gradability_threshold_instead_of_a_confident_grade(self):
        prediction = _mark(self.prediction, quality=0.0, ood=0.4)
        self.assertEqual(prediction_abstention_reason(prediction=prediction), REASON_GRADABILITY)
        response = self.client.get(self.url)
        self.assertContains(response, ABSTAINS)
        self.assertContains(response, 'data-abstention="gradability"')
        self.assertNotContains(response, "Predicts")
        self.assertNotContains(response, "94%")

    def test_it_abstains_outside_the_training_domain(self):
        prediction = _mark(self.prediction, quality=0.9, ood=2.5)
        self.assertEqual(prediction_abstention_reason(prediction=prediction), REASON_OUT_OF_DOMAIN)
        response = self.client.get(self.url)
        self.assertContains(response, ABSTAINS)
        self.assertContains(response, "2.5×")
        self.assertNotContains(response, "Predicts")
        cam = self.client.get(reverse("image_cam", args=[self.image.pk]))
        self.assertEqual(cam.status_code, 404)

    def test_a_gradable_photo_inside_the_domain_gets_its_grade(self):
        prediction = _mark(self.prediction, quality=0.9, ood=0.8)
        self.assertIsNone(prediction_abstention_reason(prediction=prediction))
        response = self.client.get(self.url)
        self.assertContains(response, "Predicts")
        self.assertNotContains(response, ABSTAINS)

    def test_an_unmeasured_prediction_is_not_an_abstention(self):
        prediction = _mark(self.prediction, quality=None, ood=None)
        self.assertIsNone(prediction_abstention_reason(prediction=prediction))

    def test_without_the_quality_gate_only_the_domain_decides(self):
        prediction = _mark(self.prediction, quality=0.1, ood=0.5)
        with override_settings(FUNDUS_QUALITY_GATE=False):
            self.assertIsNone(prediction_abstention_reason(prediction=prediction))


class WorklistAbstentionTests(GradingTestCase):
    def test_most_uncertain_first_queues_abstentions_with_the_unpredicted(self):
        version = model_version_active_make()
        sure, unsure, abstained = image_make(), image_make(), image_make()
        prediction_make(image=sure, version=version, probabilities=[0.96, 0.01, 0.01, 0.01, 0.01])
        prediction_make(image=unsure, version=version, probabilities=[0.2] * 5)
        # Its probabilities are the most uncertain of all, but they mean nothing: out of domain.
        _mark(
            prediction_make(image=abstained, version=version, probabilities=[0.2] * 5),
            quality=0.9,
            ood=3.0,
        )
        self.assertEqual(
            worklist_ordered_ids(grader=self.alice, order="uncertain"),
            [unsure.pk, sure.pk, abstained.pk],
        )


@override_settings(FUNDUS_QUALITY_GATE=True)
class ReviewAbstentionTests(GradingTestCase):
    def test_review_leaves_abstentions_out_of_the_metrics_and_reports_their_rate(self):
        version = model_version_active_make()
        images = images_bulk_make(4, confirmed_grades=[0, 1, 2, 4])
        for image in images:
            review_prediction_make(image=image, model_version=version, grade=4)
        Image.objects.filter(pk=images[0].pk).update(quality_score=0.1)
        Prediction.objects.filter(image=images[1]).update(ood_score=5.0)
        summary = review_summary(filters=ReviewFilters(model_version=version))
        self.assertEqual(summary["report"]["n"], 2)
        self.assertEqual(summary["not_compared"]["abstained"], 2)
        self.assertEqual(summary["not_compared"]["abstention_rate"], 0.5)
        self.login(self.rita)
        response = self.client.get(reverse("review"))
        self.assertContains(response, 'data-metric="abstention-rate">50.0 %')
        self.assertContains(response, "2 of 4 photographs: not gradable by the model")

    def test_an_abstention_is_no_disagreement_to_adjudicate(self):
        from grading.selectors.worklist import model_disagreements

        version = model_version_active_make()
        image = image_confirm(image=images_bulk_make(1)[0], method="import", value=0)
        review_prediction_make(image=image, model_version=version, grade=4)
        self.assertEqual(model_disagreements().count(), 1)
        Image.objects.filter(pk=image.pk).update(quality_score=0.2)
        self.assertEqual(model_disagreements().count(), 0)
