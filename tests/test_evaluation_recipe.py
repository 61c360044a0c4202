"""``model_evaluate`` re-scores the recipe a version was trained with (issue 19, item 5): its head
parameters, augmentation and seed come from the version's ``metadata.json``, not from today's
settings; only the number of folds is today's."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from django.test import SimpleTestCase, override_settings

from grading.services.ml_config import training_config_of_version
from mlcore.models.artifact import FORMAT_VERSION


class VersionRecipeTests(SimpleTestCase):
    def _folder(self, meta: dict) -> str:
        folder = Path(tempfile.mkdtemp(prefix="funduscope-recipe-"))
        (folder / "metadata.json").write_text(
            json.dumps({"format_version": FORMAT_VERSION, **meta})
        )
        return str(folder)

    @override_settings(FUNDUS_TRAIN_EPOCHS=3, FUNDUS_AUGMENT_VARIANTS=0, FUNDUS_CV_FOLDS=4)
    def test_it_reads_the_head_and_augmentation_the_version_was_trained_with(self):
        folder = self._folder(
            {
                "seed": 11,
                "head": {"params": {"epochs": 70, "dropout": 0.4, "classes": [0, 1, 2, 3, 4]}},
                "augmentation": {"variants": 5, "rotation_degrees": 15.0, "tta": True, "seed": 11},
            }
        )
        config, source = training_config_of_version(
            artifact_path=folder, classes=(0, 1, 2, 3, 4), referable_from=2
        )
        self.assertEqual(source, "the version's metadata")
        self.assertEqual(config.head["epochs"], 70)  # not today's 3
        self.assertEqual(config.head["dropout"], 0.4)
        self.assertEqual((config.augment.variants, config.augment.rotation_degrees), (5, 15.0))
        self.assertTrue(config.tta)
        self.assertEqual(config.seed, 11)
        self.assertEqual(config.n_splits, 4)  # how it is scored: today's folds

    @override_settings(FUNDUS_TRAIN_EPOCHS=3, FUNDUS_AUGMENT_VARIANTS=0)
    def test_without_metadata_it_falls_back_to_the_settings_and_says_so(self):
        config, source = training_config_of_version(
            artifact_path=tempfile.mkdtemp(), classes=(0, 1, 2, 3, 4), referable_from=2
        )
        self.assertIn("today's settings", source)
        self.assertEqual(config.head["epochs"], 3)
