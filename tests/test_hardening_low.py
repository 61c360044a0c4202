"""Issue 20's low findings, one test each: an empty upload POST, patient images kept out of the
browser's cache, no inline styles in the CSP, stronger passwords, production defaults that fail
closed, job parameters read-only in the admin, unknown rubric keys refused, a bad Host header
logged in one line, upload dates from 1900, no grade beside a certification image."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import re
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django.urls import reverse

from grading.models import CertificationItem, Grade, GradeLevel, Image, Job
from tests.factories import fundus_jpeg_bytes, image_make
from tests.factories_grading import (
    GradingTestCase,
    model_version_active_make,
    prediction_make,
    workbench_set,
)

ROOT = Path(settings.BASE_DIR)


class UploadTests(GradingTestCase):
    def test_an_empty_post_is_refused_with_a_message(self):
        self.login(self.alice)
        response = self.client.post(reverse("upload"), {})
        self.assertEqual(response.status_code, 400)
        self.assertContains(response, "Choose at least one photograph", status_code=400)

    def test_a_date_before_1900_is_refused(self):
        self.login(self.alice)
        response = self.client.post(
            reverse("upload"),
            {
                "patient_id": "P-OLD",
                "eye": "R",
                "acquired_on": "0001-01-01",
                "files": SimpleUploadedFile("a.jpg", fundus_jpeg_bytes(), "image/jpeg"),
            },
        )
        self.assertContains(response, "Choose a date from 1900 on.", status_code=400)
        self.assertFalse(Image.objects.filter(patient__pseudonym="P-OLD").exists())


class CacheAndCspTests(GradingTestCase):
    def test_patient_images_are_never_cached_by_the_browser(self):
        image = image_make()
        version = model_version_active_make()
        prediction_make(image=image, version=version, probabilities=[1, 0, 0, 0, 0], with_cam=True)
        workbench_set(blind_first_grader=False)
        self.login(self.rita)
        for url in (
            reverse("image_file", args=[image.pk]),
            reverse("image_view", args=[image.pk, "cropped"]),
            reverse("image_cam", args=[image.pk]),
        ):
            with self.subTest(url=url):
                response = self.client.get(url)
                self.assertEqual(response.status_code, 200)
                self.assertEqual(response["Cache-Control"], "private, no-store")

    def test_styles_need_no_unsafe_inline(self):
        self.login(self.alice)
        policy = self.client.get(reverse("home"))["Content-Security-Policy"]
        style_src = next(part for part in policy.split(";") if "style-src" in part)
        self.assertNotIn("unsafe-inline", style_src)
        # The 500 page's one <style> block is allowed by its hash, which must match it.
        page = (ROOT / "templates" / "500.html").read_text()
        block = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        self.assertIn(f"'sha256-{digest}'", style_src)
        # No template sets a style attribute (the CSP would block it).
        offenders = [
            str(path.relative_to(ROOT))
            for path in (ROOT / "templates").rglob("*.html")
            if 'style="' in path.read_text()
        ]
        self.assertEqual(offenders, [])


class PasswordTests(GradingTestCase):
    def test_weak_passwords_are_refused(self):
        user = User(username="clin3", email="clin3@example.org")
        for weak in ("clin3clin3", "clin3clin3clin3", "short-pass1", "password1234"):
            with self.subTest(password=weak), self.assertRaises(ValidationError):
                validate_password(weak, user)
        validate_password("tangerine-harbour-71", user)


class DeploymentDefaultsTests(GradingTestCase):
    def test_the_image_and_the_stack_fail_closed(self):
        dockerfile = (ROOT / "Dockerfile").read_text()
        self.assertIn("ENV DJANGO_ENV=production", dockerfile)
        compose = (ROOT / "docker-compose.yml").read_text()
        self.assertRegex(compose, r"SECRET_KEY: \$\{SECRET_KEY:\?")
        self.assertEqual(compose.count("${POSTGRES_PASSWORD:?"), 2)
        self.assertNotIn("POSTGRES_PASSWORD:-", compose)
        self.assertIn("SECURE_SSL_REDIRECT: ${SECURE_SSL_REDIRECT:-true}", compose)


class JobAdminTests(GradingTestCase):
    def test_job_parameters_are_read_only_in_the_admin(self):
        root = User.objects.create_superuser("root", "root@example.org", "secret-pass-123")
        job = Job.objects.create(kind=Job.Kind.IMAGES_IMPORT, params={"folder": "/tmp/staged"})
        self.client.force_login(root)
        url = reverse("admin:grading_job_change", args=[job.pk])
        self.assertNotContains(self.client.get(url), 'name="params"')
        self.client.post(url, {"state": "queued", "params": '{"folder": "/"}', "progress": 0})
        job.refresh_from_db()
        self.assertEqual(job.params, {"folder": "/tmp/staged"})


class RubricKeyTests(GradingTestCase):
    def test_unknown_rubric_keys_and_quadrants_are_refused(self):
        image = image_make()
        self.login(self.alice)
        url = reverse("grade_image", args=[image.pk])
        for key in ("f_haem_xx", "f_bogus"):
            with self.subTest(key=key):
                response = self.client.post(url, {"grade": "1", "rubric": "on", key: "1"})
                self.assertContains(response, "Unknown rubric finding", status_code=400)
        self.assertFalse(Grade.objects.exists())


class DisallowedHostLogTests(GradingTestCase):
    @override_settings(ALLOWED_HOSTS=["testserver"])
    def test_a_bad_host_header_is_one_line(self):
        handler = next(h for h in logging.getLogger().handlers if h.filters)
        stream = io.StringIO()
        previous = handler.setStream(stream)
        try:
            response = self.client.get("/", HTTP_HOST="evil.example")
        finally:
            handler.setStream(previous)
        self.assertEqual(response.status_code, 400)
        logged = [line for line in stream.getvalue().splitlines() if "evil.example" in line]
        self.assertEqual(len(logged), 1, stream.getvalue())
        self.assertIn("DisallowedHost", logged[0])
        self.assertNotIn("Traceback", stream.getvalue())


class CertificationContextTests(GradingTestCase):
    def test_no_grade_of_the_patient_is_shown_beside_a_certification_image(self):
        workbench_set(certification_gates_confirmation=False)
        item_image = image_make(confirmed_grade=3)
        CertificationItem.objects.create(
            image=item_image, reference_grade=GradeLevel.objects.get(value=3)
        )
        image_make(patient=item_image.patient, eye=Image.Eye.LEFT, confirmed_grade=3)
        self.login(self.alice)
        page = self.client.get(reverse("grade_image", args=[item_image.pk])).content.decode()
        self.assertIn("data-certification", page)
        self.assertNotIn("grade-pill grade-3", page)
        self.assertNotIn("3 – Severe NPDR", page)
