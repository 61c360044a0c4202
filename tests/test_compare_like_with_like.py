"""Version comparisons pair like with like (issue 19, item 5): fold models against fold models
(out-of-fold predictions), or released models against released models on images neither
trained on; an image one version predicted out-of-fold and the other with its released model is
left out and counted."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from grading.selectors.model_versions import OOF_FILE, model_versions_compare
from tests.base import BaseTestCase
from tests.factories_jobs import model_version_make
from tests.factories_review import images_bulk_make, prediction_make


class LikeWithLikeTests(BaseTestCase):
    def setUp(self):
        self.folder = Path(tempfile.mkdtemp(prefix="funduscope-compare-"))
        self.images = images_bulk_make(12, confirmed_grades=[i % 5 for i in range(12)])
        self.cross_validated = model_version_make("v-cv", artifact_dir=self.folder / "cv")
        self.released_only = model_version_make("v-old", artifact_dir=self.folder / "old")

    def _oof(self, version, images) -> None:
        grades = np.asarray([image.confirmed_grade_id for image in images])
        np.savez_compressed(
            self.folder / version.name.removeprefix("v-") / OOF_FILE,
            sha256=np.asarray([image.sha256 for image in images]),
            grade=grades,
            predicted=grades,
            probabilities=np.eye(5)[grades] * 0.9 + 0.02,
        )

    def _released(self, version, images) -> None:
        for image in images:
            prediction_make(image=image, model_version=version, grade=image.confirmed_grade_id)

    def test_out_of_fold_is_never_paired_with_a_released_models_prediction(self):
        self._oof(self.cross_validated, self.images)
        self._released(self.released_only, self.images)
        comparison = model_versions_compare(first=self.released_only, second=self.cross_validated)
        self.assertEqual(comparison.n_images, 0)
        self.assertEqual(comparison.mixed_left_out, 12)
        self.assertIn("cannot be compared fairly", comparison.note)

    def test_released_models_are_compared_on_images_neither_trained_on(self):
        self._oof(self.cross_validated, self.images[:8])  # its training images, out-of-fold
        self._released(self.cross_validated, self.images[8:])  # confirmed after it was trained
        self._released(self.released_only, self.images)
        comparison = model_versions_compare(first=self.released_only, second=self.cross_validated)
        self.assertEqual(comparison.basis, "released")
        self.assertEqual(comparison.n_images, 4)
        self.assertEqual(comparison.mixed_left_out, 8)
