"""A job stops drawing activation maps for a version that was retired while it ran (a rollback):
nobody will look at them (issue 21)."""

from __future__ import annotations

from pathlib import Path

from grading.models import ModelVersion
from grading.selectors.predictions import cam_path
from grading.services.predictions import cams_draw
from tests.factories import image_make
from tests.factories_grading import GradingTestCase, model_version_active_make


class RetiredVersionCamTests(GradingTestCase):
    def test_it_stops_once_the_version_is_retired(self):
        version = model_version_active_make()
        images = [image_make(seed=seed) for seed in (1, 2, 3)]
        # The first map exists already (no model needed for it); the rollback happens just after.
        first = Path(cam_path(model_version_id=version.pk, sha256=images[0].sha256))
        first.parent.mkdir(parents=True, exist_ok=True)
        first.write_bytes(b"png")
        messages: list[tuple[int, str]] = []

        def progress(percent: int | float, message: str = "") -> None:
            messages.append((int(percent), message))
            if message.startswith("Heatmap 1 of 3"):
                ModelVersion.objects.filter(pk=version.pk).update(state=ModelVersion.State.RETIRED)

        drawn = cams_draw(
            images=images, model_version=version, progress=progress, step="step 2 of 2"
        )
        self.assertEqual(drawn, 0)
        self.assertEqual(messages[0], (33, "Heatmap 1 of 3 (v-test-1, step 2 of 2)"))
        self.assertEqual(messages[-1], (100, "Stopped after 1 of 3 heatmaps: v-test-1 was retired"))
        for image in images[1:]:
            self.assertFalse(
                Path(cam_path(model_version_id=version.pk, sha256=image.sha256)).exists()
            )
