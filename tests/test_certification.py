"""Certification on a gold set: building the set, serving it to a new clinician, blind grading
against the reference, figures and the pass gate, and the probes that the reference never leaks."""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse

from grading.models import CertificationItem, Grade, Image
from grading.selectors.certification import certification_result, reference_hidden
from grading.services.certification import certification_items_add, certification_set_build
from tests.factories import fundus_jpeg_bytes, image_make, user_make
from tests.factories_grading import (
    GradingTestCase,
    grade_give,
    model_version_active_make,
    prediction_make,
    workbench_set,
)


class CertificationTestCase(GradingTestCase):
    def setUp(self):
        # Two confirmed images per grade; the set gets one of each (stratified).
        self.by_grade = {
            grade: [image_make(confirmed_grade=grade) for _ in range(2)] for grade in range(5)
        }
        self.items = certification_set_build(size=5, added_by=self.adam)
        self.cert_images = [item.image for item in self.items]

    def post_grade(self, image: Image, grade: int, **extra):
        return self.client.post(
            reverse("grade_image", args=[image.pk]), {"grade": grade, "action": "submit", **extra}
        )


class CertificationSetTests(CertificationTestCase):
    def test_it_builds_a_set_stratified_by_grade_with_the_confirmed_grade_as_reference(self):
        self.assertEqual(
            sorted(item.reference_grade_id for item in CertificationItem.objects.all()),
            [0, 1, 2, 3, 4],
        )
        for item in CertificationItem.objects.select_related("image"):
            self.assertEqual(item.reference_grade_id, item.image.confirmed_grade_id)

    def test_it_never_adds_an_image_twice_and_refuses_unconfirmed_ones(self):
        more = certification_set_build(size=100)
        self.assertEqual(len(more), 5)  # the other five confirmed images
        self.assertEqual(CertificationItem.objects.count(), 10)
        from grading.services.certification import CertificationSetError

        with self.assertRaises(CertificationSetError):
            certification_items_add(image_ids=[image_make().pk])

    def test_an_admin_adds_a_stratified_sample_from_the_page(self):
        CertificationItem.objects.all().delete()
        self.login(self.adam)
        response = self.client.post(reverse("certification_build"), {"size": 10, "source": ""})
        self.assertRedirects(response, reverse("certification"))
        self.assertEqual(CertificationItem.objects.count(), 10)

    def test_only_admins_manage_the_set(self):
        self.login(self.alice)
        response = self.client.post(reverse("certification_build"), {"size": 10})
        self.assertEqual(response.status_code, 403)
        self.assertStatusByUser(reverse("certification"), alice=200, rita=200, adam=200, nora=403)


class CertificationGradingTests(CertificationTestCase):
    def test_next_image_opens_a_certification_image_for_a_new_clinician(self):
        self.login(self.alice)
        response = self.client.post(reverse("worklist_next"))
        image_id = int(response["Location"].rstrip("/").split("/")[-1])
        self.assertIn(image_id, [image.pk for image in self.cert_images])
        page = self.client.get(response["Location"])
        self.assertContains(page, "data-certification")
        self.assertContains(page, "Certification image 1 of 5")

    def test_the_home_page_offers_certification_to_a_new_clinician(self):
        self.login(self.alice)
        page = self.client.get(reverse("home"))
        self.assertContains(page, "data-certification-left")
        self.assertContains(page, "data-start-grading")

    def test_the_worklist_offers_certification_when_nothing_else_is_pending(self):
        self.login(self.alice)
        page = self.client.get(reverse("worklist"))
        self.assertContains(page, "0 of 5 certification images graded")
        self.assertNotContains(page, "disabled autofocus")

    def test_a_certification_grade_is_scored_and_leaves_the_confirmation_alone(self):
        image = self.cert_images[0]
        self.login(self.alice)
        self.post_grade(image, 4)
        grade = Grade.objects.get(image=image, grader=self.alice)
        self.assertEqual(grade.kind, Grade.Kind.CERTIFICATION)
        image.refresh_from_db()
        self.assertEqual(image.confirmation_method, Image.ConfirmationMethod.IMPORT)
        self.assertEqual(certification_result(user=self.alice).graded, 1)
        # The reference appears once the grade is saved; the grade cannot be corrected.
        page = self.client.get(reverse("grade_image", args=[image.pk]))
        self.assertContains(page, "data-reference-grade")
        self.post_grade(image, 0)
        self.assertEqual(Grade.objects.filter(image=image, grader=self.alice).count(), 1)

    def test_grading_the_set_produces_the_clinicians_figures(self):
        self.login(self.alice)
        for item in self.items:
            self.post_grade(item.image, item.reference_grade_id)
        result = certification_result(user=self.alice)
        self.assertTrue(result.complete)
        self.assertEqual(result.figures.qwk, 1.0)
        self.assertEqual(result.figures.exact.value, 1.0)
        self.assertEqual(result.figures.sensitivity.value, 1.0)
        self.assertTrue(result.passed)
        self.login(self.bob)
        for item in self.items:
            self.post_grade(item.image, 4 - item.reference_grade_id)
        self.assertFalse(certification_result(user=self.bob).passed)

        self.login(self.rita)
        page = self.client.get(reverse("certification"))
        self.assertContains(page, "data-certification-results")
        self.assertContains(page, "alice")
        self.assertContains(page, "passed")
        self.assertContains(page, "not passed")

    def test_grades_of_an_uncertified_clinician_do_not_confirm_until_they_pass(self):
        pending = image_make()
        grade = grade_give(pending, self.alice, 2)
        self.assertFalse(grade.counts_towards_confirmation)
        pending.refresh_from_db()
        self.assertEqual(pending.grading_state, Image.GradingState.PENDING)
        # Bob may still grade it: Alice's grade takes no slot.
        grade_give(pending, self.bob, 1)
        self.login(self.alice)
        for item in self.items:
            self.post_grade(item.image, item.reference_grade_id)
        later = image_make()
        grade_give(later, self.alice, 3)
        later.refresh_from_db()
        self.assertEqual(later.grading_state, Image.GradingState.CONFIRMED)

    def test_the_gate_can_be_turned_off(self):
        workbench_set(certification_gates_confirmation=False)
        pending = image_make()
        grade_give(pending, self.alice, 2)
        pending.refresh_from_db()
        self.assertEqual(pending.grading_state, Image.GradingState.CONFIRMED)

    def test_mixed_mode_alternates_certification_and_ordinary_images(self):
        workbench_set(certification_mode="mixed", certification_gates_confirmation=False)
        ordinary = [image_make() for _ in range(3)]
        self.login(self.alice)
        served = []
        for _ in range(4):
            location = self.client.post(reverse("worklist_next"))["Location"]
            image = Image.objects.get(pk=int(location.rstrip("/").split("/")[-1]))
            served.append(image.pk in {i.pk for i in self.cert_images})
            self.post_grade(image, 0)
        self.assertEqual(served, [True, False, True, False])
        self.assertTrue(all(image.pk for image in ordinary))


class ReferenceBlindnessTests(CertificationTestCase):
    """The same probes as blind mode: nothing of the reference reaches a clinician before they
    save, by any route."""

    def setUp(self):
        super().setUp()
        self.image = next(i for i in self.cert_images if i.confirmed_grade_id == 3)
        version = model_version_active_make()
        prediction_make(
            image=self.image,
            version=version,
            probabilities=[0.01, 0.01, 0.02, 0.95, 0.01],
            with_cam=True,
        )
        # A second photograph of the same patient, so the patient pages have something to say.
        self.other_eye = image_make(patient=self.image.patient, eye=Image.Eye.LEFT)

    def assert_no_reference(self, response):
        body = response.content.decode()
        self.assertNotIn("predicted-grade", body)
        self.assertNotIn("95%", body)
        self.assertNotIn("Confirmed as", body)
        self.assertNotIn("import:test", body)
        self.assertNotIn("3 – Severe NPDR", body)  # the confirmed badge; grade buttons differ
        self.assertNotIn("grade-pill grade-3", body)
        self.assertNotIn("Referable", body.replace("referable", ""))

    def test_the_reference_is_hidden_everywhere_before_the_clinician_saves(self):
        self.login(self.alice)
        self.assertTrue(reference_hidden(image=self.image, user=self.alice))
        pages = {
            "grading page": reverse("grade_image", args=[self.image.pk]),
            "image history": reverse("image_detail", args=[self.image.pk]),
            "patient page": reverse("patient_detail", args=[self.image.patient_id]),
            "other eye's grading page": reverse("grade_image", args=[self.other_eye.pk]),
            "patients list": reverse("patients") + f"?q={self.image.patient.pseudonym}",
        }
        for name, url in pages.items():
            with self.subTest(route=name):
                response = self.client.get(url)
                self.assertEqual(response.status_code, 200)
                self.assert_no_reference(response)
        self.assertEqual(
            self.client.get(reverse("image_cam", args=[self.image.pk])).status_code, 403
        )
        for url in (
            reverse("api_image", args=[self.image.pk]),
            reverse("api_image_grades", args=[self.image.pk]),
            reverse("export_grades_csv"),
            reverse("export_predictions_csv"),
        ):
            with self.subTest(route=url):
                self.assertEqual(self.client.get(url).status_code, 403)

    def test_the_reference_and_the_model_are_shown_once_the_clinician_has_saved(self):
        self.login(self.alice)
        self.post_grade(self.image, 2)
        self.assertFalse(reference_hidden(image=self.image, user=self.alice))
        page = self.client.get(reverse("grade_image", args=[self.image.pk]))
        self.assertContains(page, "data-reference-grade")
        self.assertContains(page, "predicted-grade")
        history = self.client.get(reverse("image_detail", args=[self.image.pk]))
        self.assertContains(history, "Confirmed as")
        self.assertEqual(
            self.client.get(reverse("image_cam", args=[self.image.pk])).status_code, 200
        )

    def test_reviewers_see_the_reference(self):
        self.login(self.rita)
        history = self.client.get(reverse("image_detail", args=[self.image.pk]))
        self.assertContains(history, "Confirmed as")


class BootstrapCertificationTests(GradingTestCase):
    def test_after_the_demo_bootstrap_a_new_clinician_starts_on_a_certification_image(self):
        demo = Path(tempfile.mkdtemp(prefix="funduscope-demo-"))
        self.addCleanup(shutil.rmtree, demo, ignore_errors=True)
        for index in range(15):
            folder = demo / str(index % 5)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"img{index}.jpg").write_bytes(fundus_jpeg_bytes(seed=8100 + index))
        with override_settings(FUNDUS_DEMO_DIR=str(demo)):
            call_command("bootstrap", stdout=io.StringIO())
            call_command("bootstrap", stdout=io.StringIO())  # a second start changes nothing
        self.assertEqual(CertificationItem.objects.count(), 15)  # min(100, all 15)
        newcomer = user_make("carol", "clinician")
        self.login(newcomer)
        location = self.client.post(reverse("worklist_next"))["Location"]
        image_id = int(location.rstrip("/").split("/")[-1])
        self.assertTrue(CertificationItem.objects.filter(image_id=image_id).exists())
