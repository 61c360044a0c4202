"""Uploads: a duplicate-only upload creates no patient; photographs too small to grade are
refused; a large upload is stored by the request and imported by a background job with progress,
so no upload can run into the web server's timeout."""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django.urls import reverse

from grading.models import Image, Job, Patient
from grading.tasks import images_import
from tests.factories import fundus_jpeg_bytes, image_make
from tests.factories_grading import GradingTestCase
from tests.factories_jobs import DEAD_BROKER_URL, BrokerMixin, use_broker

URL = reverse("upload")


def photo(name: str, *, size: int = 160, seed: int | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, fundus_jpeg_bytes(size=size, seed=seed))


class UploadRulesTests(GradingTestCase):
    def setUp(self):
        self.login(self.alice)

    def post(self, *files, patient_id: str = "P-NEW"):
        return self.client.post(
            URL, {"patient_id": patient_id, "eye": "R", "files": list(files)}, follow=True
        )

    def test_a_duplicate_only_upload_creates_no_patient(self):
        data = fundus_jpeg_bytes(size=160, seed=7)
        self.post(SimpleUploadedFile("a.jpg", data), patient_id="P-FIRST")
        response = self.post(SimpleUploadedFile("again.jpg", data), patient_id="P-SECOND")
        self.assertContains(response, "Already stored as image")
        self.assertFalse(Patient.objects.filter(pseudonym="P-SECOND").exists())

    def test_tiny_images_are_refused_with_the_minimum(self):
        response = self.post(photo("pixel.png", size=1), photo("icon.jpg", size=4))
        self.assertContains(response, "1x1 pixels is too small to grade")
        self.assertContains(response, "4x4 pixels is too small to grade")
        self.assertContains(response, "at least 128 pixels on its short side")
        self.assertFalse(Image.objects.exists())
        self.assertFalse(Patient.objects.filter(pseudonym="P-NEW").exists())

    @override_settings(FUNDUS_MIN_IMAGE_SIDE=200)
    def test_the_minimum_is_configurable(self):
        response = self.post(photo("small.jpg", size=160))
        self.assertContains(response, "at least 200 pixels")
        self.assertContains(self.post(photo("big.jpg", size=200)), "Stored as image")


@override_settings(FUNDUS_UPLOAD_INLINE_MAX_FILES=2)
class LargeUploadTests(BrokerMixin, GradingTestCase):
    def setUp(self):
        self.staging = tempfile.mkdtemp(prefix="funduscope-staging-")
        override = override_settings(FUNDUS_UPLOAD_STAGING_DIR=Path(self.staging))
        override.enable()
        self.addCleanup(override.disable)
        self.login(self.alice)
        self.existing = image_make()

    def _files(self):
        duplicate = SimpleUploadedFile("dup.jpg", self.existing.file.open("rb").read())
        return [
            photo("a.jpg"),
            photo("b.jpg"),
            photo("tiny.jpg", size=8),
            duplicate,
            SimpleUploadedFile("notes.txt", b"not a photo"),
        ]

    def test_the_request_stores_the_files_and_a_job_imports_them_with_progress(self):
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(
                URL, {"patient_id": "P-BATCH", "eye": "L", "files": self._files()}
            )
        job = Job.objects.get(kind=Job.Kind.IMAGES_IMPORT)
        self.assertRedirects(response, reverse("upload_job", args=[job.pk]))
        # Nothing was decoded or imported in the request: the files wait in the staging folder.
        self.assertEqual(Image.objects.count(), 1)
        self.assertEqual(len(list(Path(job.params["folder"]).iterdir())), 5)
        self.assertContains(self.client.get(reverse("upload_job", args=[job.pk])), "Queued")

        images_import.apply(args=[job.pk], task_id=job.celery_task_id)
        job.refresh_from_db()
        self.assertEqual((job.state, job.progress), (Job.State.SUCCEEDED, 100))
        self.assertEqual(
            (job.result["accepted"], job.result["duplicates"], job.result["rejected"]), (2, 1, 2)
        )
        self.assertEqual(Image.objects.filter(patient__pseudonym="P-BATCH").count(), 2)
        self.assertFalse(Path(job.params["folder"]).exists())
        page = self.client.get(reverse("upload_job", args=[job.pk]))
        self.assertContains(page, "too small to grade")
        self.assertContains(page, "not an image file")

    def test_another_user_cannot_follow_the_import(self):
        with self.captureOnCommitCallbacks(execute=True):
            self.client.post(URL, {"patient_id": "P-BATCH", "eye": "L", "files": self._files()})
        job = Job.objects.get(kind=Job.Kind.IMAGES_IMPORT)
        self.login(self.bob)
        self.assertEqual(self.client.get(reverse("upload_job", args=[job.pk])).status_code, 404)

    def test_with_redis_down_a_large_upload_is_refused_and_nothing_stays(self):
        with use_broker(DEAD_BROKER_URL):
            response = self.client.post(
                URL, {"patient_id": "P-BATCH", "eye": "L", "files": self._files()}
            )
        self.assertContains(response, "Nothing was stored", status_code=400)
        self.assertFalse(Job.objects.filter(kind=Job.Kind.IMAGES_IMPORT).exists())
        self.assertEqual(list(Path(self.staging).iterdir()), [])
