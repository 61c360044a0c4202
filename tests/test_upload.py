"""Upload page: per-file validation, duplicates, archives, and the background prediction request."""

from __future__ import annotations

import datetime as dt
import io
import struct
import zipfile
import zlib
from unittest import mock

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django.urls import reverse

from grading.models import Image, Patient
from grading.services import uploads
from tests.factories import fundus_jpeg_bytes
from tests.factories_grading import GradingTestCase, model_version_active_make

URL = reverse("upload")
ENQUEUE = "grading.services.predictions.images_predict_enqueue"


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels but is a few bytes on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def zip_bytes(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def upload_file(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


class UploadTests(GradingTestCase):
    def setUp(self):
        self.login(self.alice)
        self.enqueue = mock.patch(ENQUEUE, return_value=True)
        self.enqueue_mock = self.enqueue.start()
        self.addCleanup(self.enqueue.stop)

    def post(self, *files: SimpleUploadedFile, **fields):
        data = {"patient_id": "P-UP-1", "eye": "L", "acquired_on": "2024-03-05", **fields}
        data["files"] = list(files)
        return self.client.post(URL, data, follow=True)  # POST/redirect/GET

    def test_only_uploaders_see_the_page(self):
        self.assertStatusByUser(URL, alice=200, adam=200, rita=403, nora=403)

    def test_it_stores_several_photographs_for_one_visit_and_requests_predictions(self):
        response = self.post(
            upload_file("a.jpg", fundus_jpeg_bytes()),
            upload_file("b.png", fundus_jpeg_bytes(fmt="PNG")),
        )
        self.assertContains(response, "<strong>2</strong> stored")
        images = Image.objects.order_by("id")
        self.assertEqual(images.count(), 2)
        patient = Patient.objects.get(pseudonym="P-UP-1")
        for image in images:
            self.assertEqual((image.patient, image.eye), (patient, "L"))
            self.assertEqual(image.acquired_on, dt.date(2024, 3, 5))
            self.assertEqual(image.uploaded_by, self.alice)
            self.assertEqual(image.grading_state, Image.GradingState.PENDING)
        self.enqueue_mock.assert_called_once_with(image_ids=[image.pk for image in images])
        self.assertContains(response, "background prediction was requested")

    def test_it_says_when_the_prediction_queue_is_unavailable(self):
        model_version_active_make()
        self.enqueue_mock.return_value = False
        response = self.post(upload_file("a.jpg", fundus_jpeg_bytes()))
        self.assertContains(response, "The prediction queue is unavailable")
        self.assertEqual(Image.objects.count(), 1)

    def test_it_says_when_no_model_is_active(self):
        self.enqueue.stop()  # the real function: no active version, so nothing is queued
        response = self.post(upload_file("a.jpg", fundus_jpeg_bytes()))
        self.assertContains(response, "No model is active yet")
        self.assertEqual(Image.objects.count(), 1)
        self.enqueue.start()

    def test_it_rejects_a_file_that_is_not_an_image(self):
        response = self.post(upload_file("notes.jpg", b"Patient notes, definitely not a JPEG"))
        self.assertContains(response, "notes.jpg")
        self.assertContains(response, "this is not an image file (it could not be decoded)")
        self.assertFalse(Image.objects.exists())
        self.enqueue_mock.assert_not_called()

    def test_it_rejects_a_truncated_jpeg(self):
        data = fundus_jpeg_bytes(size=128)
        response = self.post(upload_file("cut.jpg", data[: len(data) // 2]))
        self.assertContains(response, "the image is damaged or truncated")
        self.assertFalse(Image.objects.exists())

    def test_it_rejects_a_decompression_bomb(self):
        bomb = png_bomb()
        self.assertLess(len(bomb), 200)
        response = self.post(upload_file("bomb.png", bomb))
        self.assertContains(response, "too many pixels")
        self.assertFalse(Image.objects.exists())

    def test_it_reports_a_duplicate_and_stores_it_once(self):
        data = fundus_jpeg_bytes()
        self.post(upload_file("first.jpg", data))
        response = self.post(upload_file("again.jpg", data), patient_id="P-OTHER")
        self.assertContains(response, "Duplicate")
        self.assertContains(response, "Already stored as image")
        self.assertContains(response, "not stored again")
        self.assertEqual(Image.objects.count(), 1)

    def test_a_duplicate_within_one_upload_is_reported(self):
        data = fundus_jpeg_bytes()
        response = self.post(upload_file("one.jpg", data), upload_file("two.jpg", data))
        self.assertContains(response, "<strong>1</strong> stored")
        self.assertContains(response, "<strong>1</strong> duplicate")

    def test_good_files_are_kept_when_others_are_rejected(self):
        response = self.post(
            upload_file("good.jpg", fundus_jpeg_bytes()), upload_file("bad.jpg", b"nope")
        )
        self.assertContains(response, "<strong>1</strong> stored")
        self.assertContains(response, "<strong>1</strong> rejected")

    @override_settings(FUNDUS_MAX_UPLOAD_BYTES=2048)
    def test_it_rejects_an_oversized_file_without_reading_it(self):
        response = self.post(upload_file("big.jpg", fundus_jpeg_bytes(size=256)))
        self.assertContains(response, "larger than")
        self.assertFalse(Image.objects.exists())

    def test_the_form_is_validated(self):
        cases = [
            ({"patient_id": ""}, "This field is required"),
            ({"patient_id": "John Smith"}, "never a name"),
            ({"eye": "X"}, "Select a valid choice"),
            ({"acquired_on": "2999-01-01"}, "cannot be in the future"),
        ]
        for fields, message in cases:
            with self.subTest(fields=fields):
                response = self.post(upload_file("a.jpg", fundus_jpeg_bytes()), **fields)
                self.assertContains(response, message, status_code=400)
        self.assertFalse(Image.objects.exists())

    def test_no_file_is_an_error(self):
        response = self.post()
        self.assertContains(response, "Choose at least one photograph", status_code=400)


class ZipUploadTests(GradingTestCase):
    def setUp(self):
        self.login(self.alice)
        patcher = mock.patch(ENQUEUE, return_value=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    def post_zip(self, data: bytes, name: str = "visit.zip"):
        return self.client.post(
            URL,
            {"patient_id": "P-ZIP", "eye": "R", "files": [upload_file(name, data)]},
            follow=True,
        )

    def test_it_unpacks_photographs_and_handles_junk_safely(self):
        archive = zip_bytes(
            {
                "visit/right-1.jpg": fundus_jpeg_bytes(),
                "visit/right-2.png": fundus_jpeg_bytes(fmt="PNG"),
                "__MACOSX/visit/._right-1.jpg": b"\x00\x05\x16\x07",
                "visit/.DS_Store": b"junk",
                "../../etc/passwd.jpg": b"root:x:0:0",
                "inner.zip": zip_bytes({"x.jpg": fundus_jpeg_bytes()}),
                "readme.txt": b"hello",
            }
        )
        response = self.post_zip(archive)
        self.assertContains(response, "<strong>2</strong> stored")
        self.assertContains(response, "archives inside archives are not opened")
        self.assertContains(response, "System file in the archive; ignored.")
        self.assertContains(response, "visit.zip/readme.txt")
        self.assertContains(response, "<strong>3</strong> rejected")  # passwd, inner.zip, readme
        self.assertEqual(Image.objects.count(), 2)

    def test_it_refuses_an_archive_with_too_many_members(self):
        archive = zip_bytes({f"f{i}.jpg": b"x" for i in range(6)})
        with mock.patch.object(uploads, "ZIP_MAX_MEMBERS", 5):
            response = self.post_zip(archive)
        self.assertContains(response, "the archive holds 6 files; at most 5 are accepted")
        self.assertFalse(Image.objects.exists())

    @override_settings(FUNDUS_MAX_UPLOAD_BYTES=1024 * 1024)
    def test_it_refuses_a_zip_bomb_before_decompressing(self):
        # 8 MB of zeros compresses to ~8 kB: the directory's sizes give it away (the limits are
        # scaled down here; the defaults are 40 MB per file and 2 GB per archive).
        archive = zip_bytes({"zeros.jpg": b"\x00" * (8 * 1024 * 1024)})
        self.assertLess(len(archive), 20_000)
        response = self.post_zip(archive)
        self.assertContains(response, "the file is larger than 1 MB")
        with mock.patch.object(uploads, "ZIP_MAX_UNCOMPRESSED_BYTES", 4 * 1024 * 1024):
            response = self.post_zip(archive)
        self.assertContains(response, "would unpack to 8 MB, more than the limit of 4 MB")
        self.assertFalse(Image.objects.exists())

    def test_a_broken_archive_is_reported(self):
        archive = zip_bytes({"a.jpg": fundus_jpeg_bytes()})
        response = self.post_zip(archive[: len(archive) // 2])
        self.assertContains(response, "not a readable .zip archive")


class UploadPostRedirectGetTests(GradingTestCase):
    def setUp(self):
        self.login(self.alice)
        self.enqueue = mock.patch(ENQUEUE, return_value=True)
        self.enqueue.start()
        self.addCleanup(self.enqueue.stop)

    def test_the_result_is_a_get_page_and_a_reload_uploads_nothing_again(self):
        data = {
            "patient_id": "P-PRG",
            "eye": "L",
            "files": [upload_file("a.jpg", fundus_jpeg_bytes(seed=5))],
        }
        response = self.client.post(URL, data)
        self.assertRedirects(response, URL, fetch_redirect_response=False)
        result = self.client.get(URL)
        self.assertContains(result, "Stored")
        self.assertContains(result, "P-PRG")
        reload = self.client.get(URL)  # the browser's reload repeats the GET, not the POST
        self.assertNotContains(reload, "upload-report")
        self.assertEqual(Image.objects.filter(patient__pseudonym="P-PRG").count(), 1)

    @override_settings(FUNDUS_QUALITY_GATE=True)
    def test_a_photo_held_for_a_quality_check_says_so_instead_of_grade_it(self):
        data = {
            "patient_id": "P-HELD",
            "eye": "R",
            "files": [upload_file("small.jpg", fundus_jpeg_bytes(seed=6))],
        }
        result = self.client.post(URL, data, follow=True)
        image = Image.objects.get(patient__pseudonym="P-HELD")
        self.assertEqual(image.quality_review, Image.QualityReview.CHECK)
        self.assertContains(result, "Held for a quality check")
        self.assertContains(result, reverse("quality_queue"))
        self.assertNotContains(result, reverse("grade_image", args=[image.pk]))
