"""Test data for the grading pages: settings, an active model with predictions, grades."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
from django.conf import settings
from django.db import connections

from grading.models import Grade, GradeLevel, Image, ModelVersion, Prediction
from grading.selectors.worklist import workbench_settings_get
from grading.services.grades import GradeInput, grade_submit
from tests.base import BaseTestCase


class MigrationDataKeptMixin:
    """For TransactionTestCase classes: start from the rows the data migrations wrote (roles,
    grade scale, settings) and put them back after the end-of-test flush, so a transactional test
    that runs after this one (e.g. a browser test without ``serialized_rollback``) still finds
    them."""

    serialized_rollback = True

    def _fixture_teardown(self):
        super()._fixture_teardown()
        for alias in self._databases_names(include_mirrors=False):
            connection = connections[alias]
            if hasattr(connection, "_test_serialized_contents"):
                connection.creation.deserialize_db_from_string(connection._test_serialized_contents)


class GradingTestCase(BaseTestCase):
    """BaseTestCase (alice, bob, rita, adam, nora) with a check of who may open which page."""

    def assertStatusByUser(self, *urls: str, **expected: int) -> None:
        """GET each URL as each named user (``alice=200, rita=403``) and check the status."""
        for username, status in expected.items():
            with self.subTest(user=username):
                self.login(getattr(self, username))
                for url in urls:
                    self.assertEqual(self.client.get(url).status_code, status, url)


def workbench_set(**values) -> None:
    row = workbench_settings_get()
    for name, value in values.items():
        setattr(row, name, value)
    row.save()


def model_version_active_make(name: str = "v-test-1") -> ModelVersion:
    return ModelVersion.objects.create(
        name=name, state=ModelVersion.State.ACTIVE, class_values=[0, 1, 2, 3, 4]
    )


def prediction_make(
    *, image: Image, version: ModelVersion, probabilities: list[float], with_cam: bool = False
) -> Prediction:
    predicted = int(np.argmax(probabilities))
    prediction = Prediction.objects.create(
        image=image,
        model_version=version,
        probabilities=probabilities,
        predicted_grade=GradeLevel.objects.get(value=predicted),
    )
    if with_cam:
        cam = Path(settings.MEDIA_ROOT) / "cams" / str(version.pk) / f"{image.sha256}.png"
        cam.parent.mkdir(parents=True, exist_ok=True)
        heat = np.zeros((32, 32, 3), dtype=np.uint8)
        heat[8:24, 8:24] = (255, 0, 0)
        PIL.Image.fromarray(heat).save(cam)
    return prediction


def grade_give(image: Image, grader, grade: int | None, **extra) -> Grade:
    return grade_submit(
        image=image,
        grader=grader,
        choice=GradeInput(grade=grade, ungradable=grade is None, **extra),
    )
