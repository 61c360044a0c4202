"""The image history says when a version's grade is not its tallest bar (ordinal decoding), as the
grading page does (issue 21: "4 – PDR" beside a tallest bar at grade 3, with no word on it)."""

from __future__ import annotations

from grading.models import ModelVersion
from tests.base import BaseTestCase
from tests.factories import image_make
from tests.factories_review import model_version_make, prediction_make


class TimelineOrdinalNoteTests(BaseTestCase):
    def test_a_grade_beyond_the_tallest_bar_is_explained(self):
        image = image_make()
        version = model_version_make("v9", state=ModelVersion.State.ACTIVE)
        prediction_make(
            image=image,
            model_version=version,
            grade=4,
            probabilities=[0.02, 0.08, 0.2, 0.4, 0.3],
        )
        self.login(self.rita)
        response = self.client.get(f"/images/{image.pk}/")
        self.assertContains(response, "data-ordinal-note")
        self.assertContains(response, "not from the tallest bar")

    def test_an_argmax_grade_needs_no_note(self):
        image = image_make()
        version = model_version_make("v8", state=ModelVersion.State.ACTIVE)
        prediction_make(
            image=image, model_version=version, grade=3, probabilities=[0.02, 0.08, 0.2, 0.6, 0.1]
        )
        self.login(self.rita)
        self.assertNotContains(self.client.get(f"/images/{image.pk}/"), "data-ordinal-note")
