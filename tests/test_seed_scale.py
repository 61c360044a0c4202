from __future__ import annotations

import tempfile
from io import StringIO
from pathlib import Path

from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Count
from django.test import TestCase

from grading.models import Grade, Image, Job, ModelVersion, Patient, Prediction
from tests.base import MediaMixin

PASSWORD = "scale-pass-123"


def seed(images: int, **options) -> str:
    out = StringIO()
    empty = tempfile.mkdtemp(prefix="funduscope-no-photos-")
    call_command(
        "seed_scale",
        images=images,
        graders=options.pop("graders", 6),
        password=PASSWORD,
        photos_dir=Path(empty),
        stdout=out,
        **options,
    )
    return out.getvalue()


class SeedScaleTests(MediaMixin, TestCase):
    def test_it_fills_a_realistic_installation(self):
        output = seed(240)
        self.assertIn("Seeded 240 images", output)
        images = Image.objects.filter(source="scale-test")
        self.assertEqual(images.count(), 240)
        self.assertEqual(images.values("sha256").distinct().count(), 240)
        # A few photographs on disk, many image rows pointing at them.
        self.assertLessEqual(images.values("file").distinct().count(), 4)
        for name in images.values_list("file", flat=True).distinct():
            self.assertTrue(Path(self._media_dir, name).is_file(), name)
        # Patients with both eyes over several visits.
        patient = Patient.objects.annotate(n=Count("images")).filter(n__gt=0).first()
        eyes = set(patient.images.values_list("eye", flat=True))
        self.assertEqual(eyes, {Image.Eye.LEFT, Image.Eye.RIGHT})
        self.assertGreater(patient.images.values("acquired_on").distinct().count(), 2)
        states = set(images.values_list("grading_state", flat=True))
        self.assertEqual(states, {"pending", "adjudication", "confirmed"})
        self.assertGreater(
            Grade.objects.filter(kind=Grade.Kind.GRADER).values("grader").distinct().count(), 3
        )
        self.assertTrue(Grade.objects.filter(kind=Grade.Kind.ADJUDICATION).exists())
        self.assertTrue(images.filter(confirmation_method="import").exists())
        versions = ModelVersion.objects.filter(name__startswith="scale-")
        self.assertEqual(versions.count(), 2)
        self.assertEqual(versions.filter(state=ModelVersion.State.ACTIVE).count(), 1)
        for version in versions:
            self.assertEqual(Prediction.objects.filter(model_version=version).count(), 240)
        self.assertFalse(Prediction.objects.filter(entropy__isnull=True).exists())
        self.assertTrue(Job.objects.exists())
        # The queue is what arrived last: every pending image is newer than every confirmed one.
        newest_confirmed = images.filter(grading_state="confirmed").latest("uploaded_at")
        oldest_pending = images.filter(grading_state="pending").earliest("uploaded_at")
        self.assertLess(newest_confirmed.uploaded_at, oldest_pending.uploaded_at)

    def test_the_graders_can_log_in_with_the_given_password(self):
        seed(20, graders=3)
        self.assertTrue(self.client.login(username="scale-grader01", password=PASSWORD))
        self.assertTrue(self.client.login(username="scale-reviewer", password=PASSWORD))

    def test_it_refuses_to_seed_twice(self):
        seed(20, graders=3)
        with self.assertRaisesMessage(CommandError, "already holds a scale-test installation"):
            seed(20, graders=3)

    def test_it_refuses_a_short_password(self):
        with self.assertRaisesMessage(CommandError, "password of 8+ characters"):
            call_command("seed_scale", images=10, password="short", stdout=StringIO())
