"""One visibility rule on every surface (issue 20): an admin who grades reads a pending image
blind on the audit page, in the Django admin (lists, inlines, change pages, search) and in the
quality queue, exactly as on the grading page; once they have saved their grade, they see it all.
Grades are never added in the admin on someone's behalf."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.urls import reverse

from grading.models import Grade, Image
from tests.factories import image_make
from tests.factories_grading import (
    GradingTestCase,
    grade_give,
    model_version_active_make,
    prediction_make,
    workbench_set,
)

SECRET_NOTES = "first-reader-notes-9c2e"
# A probability no page prints for anything else: 0.6173 -> "61.7" on pages, 0.6173 in JSON.
PROBABILITIES = [0.0412, 0.0415, 0.6173, 0.25, 0.05]
PROBABILITY_MARKS = ("0.6173", "61.7")


class AdminWhoGradesTests(GradingTestCase):
    def setUp(self):
        workbench_set(grades_required=2, blind_first_grader=True)
        self.root = User.objects.create_superuser("root", "root@example.org", "secret-pass-123")
        self.image = image_make()
        Image.objects.filter(pk=self.image.pk).update(quality_review=Image.QualityReview.CHECK)
        self.first = grade_give(self.image, self.alice, 3, notes=SECRET_NOTES)
        version = model_version_active_make()
        self.prediction = prediction_make(
            image=self.image, version=version, probabilities=PROBABILITIES
        )
        self.client.force_login(self.root)

    def _surfaces(self) -> dict[str, str]:
        urls = {
            "audit": reverse("audit_trail"),
            "audit search": reverse("audit_trail") + "?page=1",
            "grade list": reverse("admin:grading_grade_changelist"),
            "grade search": reverse("admin:grading_grade_changelist") + "?q=alice",
            "grade change": reverse("admin:grading_grade_change", args=[self.first.pk]),
            "image change": reverse("admin:grading_image_change", args=[self.image.pk]),
            "image list": reverse("admin:grading_image_changelist"),
            "prediction list": reverse("admin:grading_prediction_changelist"),
            "prediction change": reverse(
                "admin:grading_prediction_change", args=[self.prediction.pk]
            ),
            "log entries": reverse("admin:auditlog_logentry_changelist"),
            "log entry search": reverse("admin:auditlog_logentry_changelist") + "?q=alice",
            "quality queue": reverse("quality_queue"),
        }
        pages = {}
        for name, url in urls.items():
            response = self.client.get(url, follow=True)
            self.assertLess(response.status_code, 500, name)
            pages[name] = response.content.decode()
        return pages

    def _leaks(self, pages: dict[str, str]) -> list[str]:
        marks = (
            SECRET_NOTES,
            f"{self.image.pk}: 3 by alice",
            'field-grader nowrap">alice',
            *PROBABILITY_MARKS,
        )
        return [f"{name}: {mark}" for name, page in pages.items() for mark in marks if mark in page]

    def test_an_admin_who_has_not_graded_sees_no_other_grade_nor_the_model(self):
        pages = self._surfaces()
        self.assertEqual(self._leaks(pages), [])
        self.assertIn(f"Photograph #{self.image.pk}", pages["quality queue"])

    def test_once_the_admin_has_graded_every_surface_shows_it(self):
        grade_give(self.image, self.root, 2)  # disagrees: the image needs adjudication
        pages = self._surfaces()
        leaks = self._leaks(pages)
        for surface in ("audit", "grade list", "image change", "prediction change"):
            self.assertTrue(any(leak.startswith(surface) for leak in leaks), surface)
        # The quality decision is theirs already: the queue no longer offers the image.
        self.assertNotIn(f"Photograph #{self.image.pk}", pages["quality queue"])

    def test_an_admin_cannot_add_a_grade_on_someones_behalf(self):
        url = reverse("admin:grading_grade_add")
        self.assertEqual(self.client.get(url).status_code, 403)
        response = self.client.post(
            url, {"image": self.image.pk, "kind": "grader", "grader": self.bob.pk, "grade": 1}
        )
        self.assertEqual(response.status_code, 403)
        self.assertFalse(Grade.objects.filter(grader=self.bob).exists())

    def test_a_correction_by_an_admin_is_recorded_as_theirs(self):
        image = image_make()
        grade_give(image, self.root, 1)
        self.client.post(reverse("grade_image", args=[image.pk]), {"grade": "2"})
        latest = Grade.objects.filter(image=image).latest("id")
        self.assertEqual((latest.grader, latest.grade_id), (self.root, 2))
