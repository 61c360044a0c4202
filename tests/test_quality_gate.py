"""The photo-quality gate: measured at upload and import, low scores wait in the "check quality"
queue (not graded), a clinician passes them on or confirms them ungradable, thresholds retune."""

from __future__ import annotations

import io

import PIL.Image
import PIL.ImageFilter
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django.urls import reverse

from grading.models import Grade, Image
from grading.selectors.worklist import images_needing_grade, workbench_settings_get
from grading.services.images import image_create, image_validate
from grading.services.workbench import workbench_settings_update
from mlcore.data.quality import degraded_copy
from tests.factories import fundus_jpeg_bytes, patient_make
from tests.factories_grading import GradingTestCase


def jpeg(image: PIL.Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


GOOD = fundus_jpeg_bytes(size=512, seed=31)
BLURRED = jpeg(degraded_copy(PIL.Image.open(io.BytesIO(GOOD)), "blurred"))


@override_settings(FUNDUS_QUALITY_GATE=True)
class QualityGateTests(GradingTestCase):
    def create(self, data: bytes, **extra) -> Image:
        return image_create(validated=image_validate(data=data), patient=patient_make(), **extra)

    def test_it_measures_every_new_image_and_holds_low_scores_for_a_check(self):
        good, blurred = self.create(GOOD), self.create(BLURRED)
        self.assertGreaterEqual(good.quality_score, 0.5)
        self.assertEqual(good.quality_review, Image.QualityReview.NONE)
        self.assertLess(blurred.quality_score, 0.5)
        self.assertEqual(blurred.quality_review, Image.QualityReview.CHECK)
        self.assertGreater(good.quality_measures["focus"], blurred.quality_measures["focus"])
        waiting = set(images_needing_grade(grader=self.alice).values_list("id", flat=True))
        self.assertEqual(waiting, {good.pk})

    def test_an_upload_through_the_page_is_measured(self):
        self.login(self.alice)
        self.client.post(
            reverse("upload"),
            {
                "patient_id": "P-Q1",
                "eye": "R",
                "files": SimpleUploadedFile("blurred.jpg", BLURRED, content_type="image/jpeg"),
            },
        )
        image = Image.objects.get(patient__pseudonym="P-Q1")
        self.assertEqual(image.quality_review, Image.QualityReview.CHECK)

    def test_an_imported_image_with_a_grade_is_measured_but_never_held(self):
        from grading.models import GradeLevel

        image = self.create(BLURRED, confirmed_grade=GradeLevel.objects.get(value=1))
        self.assertLess(image.quality_score, 0.5)
        self.assertEqual(image.quality_review, Image.QualityReview.NONE)

    def test_a_clinician_passes_a_photo_on_to_grading(self):
        blurred = self.create(BLURRED)
        self.login(self.alice)
        queue = self.client.get(reverse("quality_queue"))
        self.assertContains(queue, "data-quality-queue")
        self.client.post(reverse("quality_decide", args=[blurred.pk]), {"decision": "pass"})
        blurred.refresh_from_db()
        self.assertEqual(blurred.quality_review, Image.QualityReview.PASSED)
        self.assertEqual(blurred.quality_reviewed_by, self.alice)
        self.assertTrue(images_needing_grade(grader=self.bob).filter(pk=blurred.pk).exists())

    def test_a_clinician_confirms_a_photo_ungradable(self):
        blurred = self.create(BLURRED)
        self.login(self.alice)
        self.client.post(reverse("quality_decide", args=[blurred.pk]), {"decision": "ungradable"})
        blurred.refresh_from_db()
        self.assertEqual(blurred.grading_state, Image.GradingState.CONFIRMED)
        self.assertTrue(blurred.confirmed_ungradable)
        self.assertTrue(Grade.objects.get(image=blurred).ungradable)
        # A second decision on the same photograph is refused, not applied twice.
        response = self.client.post(
            reverse("quality_decide", args=[blurred.pk]), {"decision": "pass"}, follow=True
        )
        self.assertContains(response, "not waiting for a quality check")

    def test_a_bad_decision_is_refused_with_a_message(self):
        blurred = self.create(BLURRED)
        self.login(self.alice)
        response = self.client.post(
            reverse("quality_decide", args=[blurred.pk]), {"decision": "maybe"}, follow=True
        )
        self.assertContains(response, "Choose")
        blurred.refresh_from_db()
        self.assertEqual(blurred.quality_review, Image.QualityReview.CHECK)

    def test_looser_thresholds_release_photos_from_the_check(self):
        blurred = self.create(BLURRED)
        workbench_settings_update(quality_min_focus=0.01)
        blurred.refresh_from_db()
        self.assertEqual(blurred.quality_review, Image.QualityReview.NONE)
        workbench_settings_update(quality_min_focus=3.0)
        blurred.refresh_from_db()
        self.assertEqual(blurred.quality_review, Image.QualityReview.CHECK)

    def test_the_grading_page_and_the_worklist_show_the_score(self):
        good = self.create(GOOD)
        self.login(self.alice)
        self.assertContains(self.client.get(reverse("grade_image", args=[good.pk])), "data-quality")
        worklist = self.client.get(reverse("worklist"))
        self.assertContains(worklist, f"{good.quality_score:.2f}")

    def test_the_gate_can_be_turned_off_by_the_admin(self):
        workbench_settings_update(quality_gate_enabled=False)
        blurred = self.create(BLURRED)
        self.assertEqual(blurred.quality_review, Image.QualityReview.NONE)

    def test_protocol_settings_page_is_for_admins(self):
        self.assertStatusByUser(reverse("protocol_settings"), adam=200, alice=403, rita=403)
        self.login(self.adam)
        response = self.client.post(
            reverse("protocol_settings"),
            {
                "rubric_enabled": "on",
                "certification_mode": "mixed",
                "certification_min_qwk": "0.8",
                "certification_min_sensitivity": "0.8",
                "certification_min_specificity": "0.8",
                "certification_min_exact": "0.6",
                "quality_gate_enabled": "on",
                "quality_min_focus": "abc",
                "quality_max_clipped": "0.3",
                "quality_min_coverage": "0.5",
                "quality_min_resolution": "224",
            },
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(workbench_settings_get().certification_mode, "session")  # nothing saved


@override_settings(FUNDUS_QUALITY_GATE=True)
class QualityDecisionIsAGradeTests(GradingTestCase):
    """Issue 20: "ungradable" from the quality queue is one reader's grade, under the same
    certification gate and number of readers as any grade."""

    def setUp(self):
        from tests.factories_grading import workbench_set

        workbench_set(grades_required=2)
        self.blurred = image_create(validated=image_validate(data=BLURRED), patient=patient_make())

    def decide(self, user, decision: str = "ungradable"):
        self.login(user)
        return self.client.post(
            reverse("quality_decide", args=[self.blurred.pk]), {"decision": decision}, follow=True
        )

    def test_one_reader_does_not_confirm_it_alone(self):
        self.decide(self.alice)
        self.blurred.refresh_from_db()
        self.assertEqual(self.blurred.grading_state, Image.GradingState.PENDING)
        self.assertEqual(self.blurred.quality_review, Image.QualityReview.CHECK)
        # Alice decided: the queue offers it to the other readers, not to her again.
        self.assertNotContains(self.client.get(reverse("quality_queue")), "quality_decide")
        self.assertContains(self.decide(self.alice), "already graded")
        self.decide(self.bob)
        self.blurred.refresh_from_db()
        self.assertEqual(self.blurred.grading_state, Image.GradingState.CONFIRMED)
        self.assertEqual(self.blurred.confirmation_method, Image.ConfirmationMethod.AGREEMENT)
        self.assertEqual(self.blurred.quality_review, Image.QualityReview.UNGRADABLE)

    def test_an_uncertified_clinician_does_not_count_under_the_gate(self):
        from grading.models import CertificationItem, GradeLevel
        from tests.factories import image_make
        from tests.factories_grading import workbench_set

        workbench_set(grades_required=1, certification_gates_confirmation=True)
        CertificationItem.objects.create(
            image=image_make(confirmed_grade=2), reference_grade=GradeLevel.objects.get(value=2)
        )
        self.decide(self.alice)
        grade = Grade.objects.get(image=self.blurred, grader=self.alice)
        self.assertTrue(grade.ungradable)
        self.assertFalse(grade.counts_towards_confirmation)
        self.blurred.refresh_from_db()
        self.assertNotEqual(self.blurred.grading_state, Image.GradingState.CONFIRMED)
