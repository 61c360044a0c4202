"""Patients list (search, paging) and patient page (both eyes over time, referable status)."""

from __future__ import annotations

import datetime as dt

from django.urls import reverse

from grading.models import Image
from grading.selectors.patients import patient_referable_status
from tests.factories import image_make, patient_make
from tests.factories_grading import GradingTestCase, grade_give

URL = reverse("patients")


def detail_url(patient) -> str:
    return reverse("patient_detail", args=[patient.pk])


class PatientListTests(GradingTestCase):
    def test_everyone_with_a_role_sees_patients(self):
        patient = patient_make("P-ROLE")
        self.assertStatusByUser(URL, detail_url(patient), alice=200, rita=200, adam=200, nora=403)

    def test_it_searches_by_pseudonym(self):
        patient_make("ABC-001")
        patient_make("ABC-002")
        patient_make("XYZ-003")
        self.login(self.alice)
        response = self.client.get(URL, {"q": "abc"})
        self.assertContains(response, "ABC-001")
        self.assertContains(response, "ABC-002")
        self.assertNotContains(response, "XYZ-003")
        self.assertContains(self.client.get(URL, {"q": "nobody"}), "No patient ID contains")

    def test_it_pages_through_patients_keeping_the_search(self):
        for number in range(30):
            patient_make(f"PG-{number:03d}")
        self.login(self.alice)
        first = self.client.get(URL, {"q": "PG-"})
        self.assertContains(first, "PG-000")
        self.assertNotContains(first, "PG-029")
        self.assertContains(first, "Page 1 of 2")
        self.assertContains(first, "?q=PG-&amp;page=2")
        second = self.client.get(URL, {"q": "PG-", "page": 2})
        self.assertContains(second, "PG-029")
        self.assertNotContains(second, "PG-000")

    def test_it_shows_the_referable_status(self):
        referable = patient_make("P-REF")
        image_make(patient=referable, eye="L", confirmed_grade=3)
        healthy = patient_make("P-OK")
        image_make(patient=healthy, eye="R", confirmed_grade=0)
        self.login(self.alice)
        html = self.client.get(URL).content.decode()
        ref_row = html[html.index("P-REF") :].split("</tr>")[0]
        ok_row = html[html.index("P-OK") :].split("</tr>")[0]
        self.assertIn(">Referable<", ref_row)
        self.assertIn("Not referable", ok_row)


class ReferableStatusTests(GradingTestCase):
    def test_the_worse_eye_decides(self):
        patient = patient_make()
        image_make(patient=patient, eye="R", confirmed_grade=1)
        image_make(patient=patient, eye="L", confirmed_grade=2)
        status = patient_referable_status(patient=patient)
        self.assertEqual(status.worse_grade.value, 2)
        self.assertTrue(status.referable)

    def test_the_latest_visit_of_each_eye_counts(self):
        patient = patient_make()
        image_make(patient=patient, eye="R", confirmed_grade=3, acquired_on=dt.date(2020, 1, 1))
        image_make(patient=patient, eye="R", confirmed_grade=1, acquired_on=dt.date(2024, 1, 1))
        status = patient_referable_status(patient=patient)
        self.assertEqual(status.worse_grade.value, 1)
        self.assertFalse(status.referable)
        self.assertEqual(status.label, "Not referable")

    def test_macular_oedema_is_referable_whatever_the_grade(self):
        patient = patient_make()
        image = image_make(patient=patient, eye="R")
        grade_give(image, self.alice, 1, macular_oedema=True)
        status = patient_referable_status(patient=patient)
        self.assertTrue(status.referable)
        self.assertIn("macular oedema", status.reasons)

    def test_pending_images_say_nothing_yet(self):
        patient = patient_make()
        image_make(patient=patient)
        status = patient_referable_status(patient=patient)
        self.assertFalse(status.known)
        self.assertEqual(status.label, "No confirmed grade yet")

    def test_an_ungradable_latest_image_asks_for_reimaging(self):
        patient = patient_make()
        image = image_make(patient=patient, eye="L")
        grade_give(image, self.alice, None)
        status = patient_referable_status(patient=patient)
        self.assertEqual(status.label, "Ungradable: re-image")


class PatientDetailTests(GradingTestCase):
    def test_it_shows_both_eyes_over_time_with_confirmed_grades(self):
        patient = patient_make("P-EYES")
        old = image_make(
            patient=patient, eye=Image.Eye.RIGHT, acquired_on=dt.date(2021, 6, 1), confirmed_grade=1
        )
        new = image_make(
            patient=patient, eye=Image.Eye.RIGHT, acquired_on=dt.date(2023, 6, 1), confirmed_grade=2
        )
        left = image_make(patient=patient, eye=Image.Eye.LEFT, acquired_on=dt.date(2023, 6, 1))
        self.login(self.alice)
        response = self.client.get(detail_url(patient))
        html = response.content.decode()
        self.assertContains(response, "Right eye (OD)")
        self.assertContains(response, "Left eye (OS)")
        self.assertContains(response, "2 – Moderate NPDR")
        self.assertContains(response, "Not graded yet")
        self.assertContains(response, 'id="status-heading">Referable</h2>')
        # Most recent first within an eye.
        self.assertLess(html.index(f"#{new.pk}"), html.index(f"#{old.pk}"))
        # A clinician can open the pending image for grading from here.
        self.assertContains(response, reverse("grade_image", args=[left.pk]))
        self.assertContains(response, reverse("image_view", args=[left.pk, "thumb"]))

    def test_each_photograph_links_to_its_history(self):
        patient = patient_make("P-HISTORY")
        confirmed = image_make(patient=patient, confirmed_grade=1)
        pending = image_make(patient=patient, eye=Image.Eye.LEFT)
        for user in (self.alice, self.rita):
            with self.subTest(user=user.username):
                self.login(user)
                response = self.client.get(detail_url(patient))
                for image in (confirmed, pending):
                    history = f'href="{reverse("image_detail", args=[image.pk])}"'
                    self.assertContains(response, history)
        # A clinician's thumbnail of a pending image opens it for grading, a reviewer's its history.
        self.login(self.alice)
        thumbs = self.client.get(detail_url(patient)).content.decode()
        self.assertIn(f'class="thumb" href="{reverse("grade_image", args=[pending.pk])}"', thumbs)
        self.login(self.rita)
        thumbs = self.client.get(detail_url(patient)).content.decode()
        self.assertIn(f'class="thumb" href="{reverse("image_detail", args=[pending.pk])}"', thumbs)

    def test_an_unknown_patient_is_404(self):
        self.login(self.alice)
        self.assertEqual(self.client.get(reverse("patient_detail", args=[424242])).status_code, 404)
