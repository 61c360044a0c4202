"""Review exclusion fails closed (issue 19, item 5): a version whose ``training_set.csv`` is
missing may have trained on any image, so its predictions count as trained on, except the ones
it recorded as held out."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from grading.models import Prediction
from grading.services.predictions import prediction_rows_write
from grading.services.training_set import TrainingImage, training_set_write
from tests.base import BaseTestCase
from tests.factories import image_make
from tests.factories_grading import model_version_active_make


class TrainingExclusionTests(BaseTestCase):
    def setUp(self):
        self.folder = Path(tempfile.mkdtemp(prefix="funduscope-version-"))
        self.version = model_version_active_make()
        self.version.artifact_path = str(self.folder)
        self.version.save()
        self.first, self.second = image_make(), image_make()

    def _flags(self) -> dict[int, bool]:
        prediction_rows_write(
            model_version=self.version,
            image_ids=[self.first.pk, self.second.pk],
            probabilities=np.full((2, 5), 0.2),
            predicted_grades=[0, 0],
        )
        return dict(
            Prediction.objects.filter(model_version=self.version).values_list(
                "image_id", "in_training"
            )
        )

    def test_it_treats_every_image_as_trained_on_when_the_training_set_is_missing(self):
        self.assertEqual(self._flags(), {self.first.pk: True, self.second.pk: True})

    def test_it_still_counts_a_recorded_hold_out_as_unseen(self):
        self.version.holdout_sha256 = [self.second.sha256]
        self.version.save()
        self.assertEqual(self._flags(), {self.first.pk: True, self.second.pk: False})

    def test_it_flags_exactly_the_recorded_training_set(self):
        training_set_write(
            folder=self.folder,
            images=[
                TrainingImage(
                    image_id=self.first.pk,
                    sha256=self.first.sha256,
                    path=Path(self.first.file.name),
                    grade=0,
                    patient_id=self.first.patient_id,
                )
            ],
        )
        self.assertEqual(self._flags(), {self.first.pk: True, self.second.pk: False})
