"""Bad submissions get a message and lose nothing: notes over the limit or with a NUL byte show
field errors and keep what was typed; a double submit records one grade; going past the upload
limits gets the product's own page with the limits, not a bare "Bad Request (400)"."""

from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django.urls import reverse

from grading.models import Grade, Image
from grading.services.grades import MAX_NOTES_LENGTH
from tests.factories import fundus_jpeg_bytes, image_make
from tests.factories_grading import GradingTestCase


class GradeFormErrorTests(GradingTestCase):
    def setUp(self):
        self.image = image_make()
        self.url = reverse("grade_image", args=[self.image.pk])
        self.login(self.alice)

    def test_notes_over_the_limit_show_an_error_and_keep_the_typing(self):
        notes = "microaneurysms " * 300  # 4,500 characters
        response = self.client.post(self.url, {"grade": "2", "notes": notes})
        self.assertEqual(response.status_code, 400)
        self.assertContains(response, f"at most {MAX_NOTES_LENGTH} characters", status_code=400)
        self.assertContains(response, notes.strip()[:200], status_code=400)
        self.assertContains(response, 'value="2" data-grade-key="2" checked', status_code=400)
        self.assertFalse(Grade.objects.filter(image=self.image).exists())

    def test_a_nul_byte_in_the_notes_shows_an_error(self):
        response = self.client.post(self.url, {"grade": "1", "notes": "bad\x00byte"})
        self.assertEqual(response.status_code, 400)
        self.assertContains(response, "Null characters are not allowed", status_code=400)
        self.assertContains(response, 'value="1" data-grade-key="1" checked', status_code=400)

    def test_a_double_submit_records_one_grade(self):
        for _ in range(2):
            self.client.post(self.url, {"grade": "2", "notes": "same"})
        self.assertEqual(Grade.objects.filter(image=self.image).count(), 1)
        # A correction submitted twice is one correction.
        for _ in range(2):
            response = self.client.post(self.url, {"grade": "3"}, follow=True)
        self.assertEqual(Grade.objects.filter(image=self.image).count(), 2)
        self.assertContains(response, "already saved")


class UploadLimitTests(GradingTestCase):
    def setUp(self):
        self.login(self.alice)

    @override_settings(DATA_UPLOAD_MAX_NUMBER_FILES=3)
    def test_too_many_files_get_the_limits_and_nothing_is_stored(self):
        files = [SimpleUploadedFile(f"f{n}.jpg", fundus_jpeg_bytes(size=16)) for n in range(4)]
        response = self.client.post(
            reverse("upload"), {"patient_id": "P-LIMIT", "eye": "R", "files": files}
        )
        self.assertEqual(response.status_code, 400)
        self.assertContains(response, "More than 3 files were sent at once", status_code=400)
        self.assertContains(response, "at most 3 files", status_code=400)
        self.assertFalse(Image.objects.exists())

    def test_a_thousand_character_file_name_gets_a_clear_message(self):
        # Built by hand: the test client would shorten the name to 255 characters itself.
        name = "x" * 996 + ".jpg"
        boundary = "fundusboundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="patient_id"\r\n\r\n'
                f"P-LONGNAME\r\n"
                f'--{boundary}\r\nContent-Disposition: form-data; name="eye"\r\n\r\nR\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"'
                f"\r\nContent-Type: image/jpeg\r\n\r\n"
            ).encode()
            + fundus_jpeg_bytes(size=200)
            + f"\r\n--{boundary}--\r\n".encode()
        )
        response = self.client.generic(
            "POST",
            reverse("upload"),
            body,
            content_type=f"multipart/form-data; boundary={boundary}",
        )
        self.assertEqual(response.status_code, 400)
        self.assertContains(response, "A file name is too long", status_code=400)
        self.assertContains(response, "at most 255 characters", status_code=400)
        self.assertFalse(Image.objects.exists())
