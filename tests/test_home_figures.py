"""The home page says whose figures it shows (issue 19, item 5): cross-validated figures come from
the fold models, not from the released model, which trained on every image."""

from __future__ import annotations

from django.urls import reverse

from grading.models import ModelVersion
from tests.factories_grading import GradingTestCase
from tests.factories_jobs import model_version_make

POOLED = {
    "n": 412,
    "qwk": 0.84,
    "accuracy": 0.7,
    "referable": {"sensitivity": 0.9, "specificity": 0.88, "auc": 0.95},
}


class HomeFiguresTests(GradingTestCase):
    def test_cross_validated_figures_are_described_as_the_fold_models(self):
        model_version_make(
            "v-cv",
            state=ModelVersion.State.ACTIVE,
            metrics={"cv": {"pooled": POOLED, "folds": 5}, "evaluation": "done"},
        )
        self.login(self.adam)
        response = self.client.get(reverse("home"))
        self.assertContains(response, "5 fold models, each trained on the other folds")
        self.assertContains(response, "graded the 412 images they did not train on")
        self.assertContains(response, "The released model trained on all of them")
        self.assertNotContains(response, "Measured on 412 images it did not train on")
