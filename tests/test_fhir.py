"""Results out as FHIR: /api/images/<id>/fhir/ and /api/patients/<pseudonym>/fhir/ return Bundles
that fhir.resources parses back (validates), with the confirmed grade coded per eye, DME, who
graded and when, and the model's prediction as its own Observation; a blind reader gets a valid
Bundle without what they may not see yet."""

from __future__ import annotations

import datetime as dt
import json

from fhir.resources.R4B.bundle import Bundle
from rest_framework.test import APIClient

from grading.models import Grade, Image, ModelVersion
from tests.base import BaseTestCase
from tests.factories import image_make, patient_make
from tests.factories_review import grade_make, image_confirm, model_version_make, prediction_make


def parsed(response) -> Bundle:
    """The response body, validated by fhir.resources (raises on anything that is not FHIR)."""
    return Bundle.model_validate_json(response.content)


def resources(bundle: Bundle, kind: str) -> list:
    return [entry.resource for entry in bundle.entry if type(entry.resource).__name__ == kind]


class FhirTests(BaseTestCase):
    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        cls.patient = patient_make("FHIR-1")
        visit = dt.date(2024, 5, 6)
        cls.right = image_make(patient=cls.patient, eye="R", acquired_on=visit)
        cls.left = image_make(patient=cls.patient, eye="L", acquired_on=visit)
        for image, value, dme in ((cls.right, 2, True), (cls.left, 0, False)):
            grade_make(image=image, grader=cls.alice, value=value, macular_oedema=dme)
            grade_make(image=image, grader=cls.bob, value=value, macular_oedema=dme)
            image_confirm(image=image, method=Image.ConfirmationMethod.AGREEMENT, value=value)
            Image.objects.filter(pk=image.pk).update(confirmed_macular_oedema=dme)
        cls.pending = image_make(patient=cls.patient, eye="R", acquired_on=dt.date(2025, 1, 2))
        cls.version = model_version_make("v7", state=ModelVersion.State.ACTIVE)
        for image, grade in ((cls.right, 2), (cls.left, 1), (cls.pending, 3)):
            prediction_make(image=image, model_version=cls.version, grade=grade)

    def get(self, user, url: str):
        api = APIClient()
        api.force_authenticate(user)
        return api.get(url)

    def test_an_image_report_is_valid_fhir_with_grade_dme_graders_and_the_model(self):
        response = self.get(self.rita, f"/api/images/{self.right.pk}/fhir/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Content-Type"], "application/fhir+json")
        bundle = parsed(response)
        self.assertEqual(bundle.type, "collection")
        (report,) = resources(bundle, "DiagnosticReport")
        self.assertEqual((report.status, str(report.effectiveDateTime)), ("final", "2024-05-06"))
        grade, model = resources(bundle, "Observation")
        self.assertEqual(grade.valueCodeableConcept.coding[0].code, "2")
        self.assertEqual(grade.valueCodeableConcept.coding[0].display, "Moderate NPDR")
        self.assertEqual(grade.bodySite.coding[0].code, "18944008")  # right eye
        self.assertIs(grade.component[0].valueBoolean, True)  # DME
        self.assertEqual(sorted(p.display for p in grade.performer), ["alice", "bob"])
        self.assertIsNotNone(grade.issued)
        self.assertIn("alice graded at", grade.note[0].text)
        self.assertEqual(model.status, "preliminary")
        self.assertIn("v7", model.method.text)
        self.assertEqual(model.valueCodeableConcept.coding[0].code, "2")
        self.assertEqual(
            [r.reference for r in report.result],
            [f"Observation/{grade.id}", f"Observation/{model.id}"],
        )
        patient = resources(bundle, "Patient")[0]
        self.assertEqual(patient.identifier[0].value, "FHIR-1")

    def test_the_patient_bundle_has_a_report_per_visit_and_an_observation_per_eye(self):
        bundle = parsed(self.get(self.rita, "/api/patients/FHIR-1/fhir/"))
        reports = resources(bundle, "DiagnosticReport")
        self.assertEqual([r.status for r in reports], ["final", "registered"])
        confirmed = [o for o in resources(bundle, "Observation") if o.status == "final"]
        self.assertEqual(
            sorted(o.bodySite.coding[0].display for o in confirmed),
            ["Left eye structure", "Right eye structure"],
        )
        self.assertEqual(
            len([o for o in resources(bundle, "Observation") if o.status == "preliminary"]), 3
        )

    def test_a_blind_reader_gets_valid_fhir_without_the_model_or_other_grades(self):
        # adam (admin) may grade the pending photograph and has not: he reads it blind.
        grade_make(image=self.pending, grader=self.alice, value=3)
        response = self.get(self.adam, f"/api/images/{self.pending.pk}/fhir/")
        bundle = parsed(response)
        (report,) = resources(bundle, "DiagnosticReport")
        self.assertEqual(report.status, "registered")
        self.assertEqual(resources(bundle, "Observation"), [])
        body = json.dumps(response.json())
        self.assertNotIn("alice", body)
        self.assertNotIn("v7", body)
        # Once his own grade is saved, the model is his to see.
        grade_make(image=self.pending, grader=self.adam, value=3, kind=Grade.Kind.GRADER)
        bundle = parsed(self.get(self.adam, f"/api/images/{self.pending.pk}/fhir/"))
        self.assertEqual(len(resources(bundle, "Observation")), 1)

    def test_clinicians_are_refused_like_the_rest_of_the_api_and_unknowns_are_404(self):
        self.assertEqual(
            self.get(self.alice, f"/api/images/{self.right.pk}/fhir/").status_code, 403
        )
        self.assertEqual(self.get(self.rita, "/api/images/999999/fhir/").status_code, 404)
        self.assertEqual(self.get(self.rita, "/api/patients/NOBODY/fhir/").status_code, 404)
        self.assertEqual(self.get(self.rita, "/api/patients/NO%00BODY/fhir/").status_code, 404)
