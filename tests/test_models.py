from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from grading.models import Grade, GradeLevel, Image, ModelVersion
from tests.base import BaseTestCase
from tests.factories import image_make


class ImageConstraintTests(BaseTestCase):
    def test_it_rejects_a_duplicate_sha256(self):
        image = image_make()
        clone = Image(
            patient=image.patient, sha256=image.sha256, width=10, height=10, file="images/x.jpg"
        )
        with self.assertRaises(IntegrityError), transaction.atomic():
            clone.save()

    def test_it_rejects_a_sha256_that_is_not_hex(self):
        image = image_make()
        with self.assertRaises(IntegrityError), transaction.atomic():
            Image.objects.filter(pk=image.pk).update(sha256="not-a-hash")

    def test_a_confirmed_image_needs_a_grade_or_the_ungradable_flag(self):
        image = image_make()
        with self.assertRaises(IntegrityError), transaction.atomic():
            Image.objects.filter(pk=image.pk).update(grading_state=Image.GradingState.CONFIRMED)


class GradeConstraintTests(BaseTestCase):
    def test_it_rejects_a_grade_outside_the_scale(self):
        image = image_make()
        grade = Grade(image=image, grader=self.alice, grade_id=7)
        with self.assertRaises(ValidationError):
            grade.full_clean()
        # The database refuses it too: the scale is a foreign key.
        with self.assertRaises(IntegrityError), transaction.atomic():
            Grade.objects.create(image=image, grader=self.alice, grade_id=7)
            connection.check_constraints()

    def test_it_rejects_a_grade_that_is_also_ungradable(self):
        image = image_make()
        with self.assertRaises(IntegrityError), transaction.atomic():
            Grade.objects.create(image=image, grader=self.alice, grade_id=2, ungradable=True)

    def test_it_rejects_a_grade_without_grader_or_source(self):
        image = image_make()
        with self.assertRaises(IntegrityError), transaction.atomic():
            Grade.objects.create(image=image, grade_id=2)

    def test_a_grade_is_never_changed_in_place(self):
        image = image_make()
        grade = Grade.objects.create(image=image, grader=self.alice, grade_id=1)
        grade.grade_id = 3
        with self.assertRaises(ValidationError):
            grade.save()
        grade.refresh_from_db()
        self.assertEqual(grade.grade_id, 1)

    def test_a_correction_keeps_the_history(self):
        image = image_make()
        first = Grade.objects.create(image=image, grader=self.alice, grade_id=1)
        Grade.objects.create(image=image, grader=self.alice, grade_id=3, supersedes=first)
        self.assertEqual(list(image.grades.values_list("grade_id", flat=True)), [1, 3])
        self.assertEqual(first.superseded_by.grade_id, 3)

    def test_the_default_scale_is_icdr(self):
        levels = list(GradeLevel.objects.values_list("value", "name", "is_referable"))
        self.assertEqual(levels[0], (0, "No DR", False))
        self.assertEqual([v for v, _, r in levels if r], [2, 3, 4])
        self.assertEqual(len(levels), 5)


class ModelVersionConstraintTests(BaseTestCase):
    def test_only_one_version_is_active(self):
        ModelVersion.objects.create(name="v1", state=ModelVersion.State.ACTIVE)
        with self.assertRaises(IntegrityError), transaction.atomic():
            ModelVersion.objects.create(name="v2", state=ModelVersion.State.ACTIVE)
