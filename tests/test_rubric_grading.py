"""The lesion rubric when grading: findings stored with the grade (append-only), the derived grade
kept beside an override and its reason, the page's form, the image history, the CSV and the API."""

from __future__ import annotations

import csv
import io

from django.urls import reverse

from grading.models import Grade
from grading.services.grades import GradeInput, GradeRejected, grade_submit
from mlcore.data.rubric import Findings
from tests.factories import image_make
from tests.factories_grading import GradingTestCase, workbench_set

SEVERE_BY_BEADING = Findings(microaneurysms=True, venous_beading={"ST", "IT"})


class RubricServiceTests(GradingTestCase):
    def test_it_stores_the_findings_and_the_grade_they_give(self):
        image = image_make()
        grade = grade_submit(
            image=image, grader=self.alice, choice=GradeInput(grade=3, findings=SEVERE_BY_BEADING)
        )
        self.assertTrue(grade.rubric_used)
        self.assertEqual(grade.findings["venous_beading"], ["ST", "IT"])
        self.assertEqual(grade.derived_grade_id, 3)
        self.assertEqual(grade.override_reason, "")

    def test_an_override_needs_a_reason_and_keeps_both_grades(self):
        image = image_make()
        with self.assertRaisesMessage(GradeRejected, "give a reason"):
            grade_submit(
                image=image,
                grader=self.alice,
                choice=GradeInput(grade=2, findings=SEVERE_BY_BEADING),
            )
        self.assertFalse(Grade.objects.filter(image=image).exists())
        grade = grade_submit(
            image=image,
            grader=self.alice,
            choice=GradeInput(
                grade=2, findings=SEVERE_BY_BEADING, override_reason="beading doubtful in IT"
            ),
        )
        self.assertEqual((grade.grade_id, grade.derived_grade_id), (2, 3))
        self.assertEqual(grade.override_reason, "beading doubtful in IT")

    def test_an_ungradable_image_has_no_findings(self):
        with self.assertRaises(GradeRejected):
            grade_submit(
                image=image_make(),
                grader=self.alice,
                choice=GradeInput(grade=None, ungradable=True, findings=SEVERE_BY_BEADING),
            )

    def test_a_correction_is_a_new_row_with_its_own_findings(self):
        image = image_make()
        first = grade_submit(
            image=image,
            grader=self.alice,
            choice=GradeInput(grade=1, findings=Findings(microaneurysms=True)),
        )
        second = grade_submit(
            image=image, grader=self.alice, choice=GradeInput(grade=3, findings=SEVERE_BY_BEADING)
        )
        first.refresh_from_db()
        self.assertEqual(first.findings, {"microaneurysms": True})
        self.assertEqual(second.supersedes, first)


class RubricPageTests(GradingTestCase):
    def setUp(self):
        self.image = image_make()
        self.url = reverse("grade_image", args=[self.image.pk])

    def test_the_page_shows_the_rubric_by_default_and_not_when_turned_off(self):
        self.login(self.alice)
        self.assertContains(self.client.get(self.url), "data-rubric")
        workbench_set(rubric_enabled=False)
        self.assertNotContains(self.client.get(self.url), "data-rubric")

    def test_it_saves_ticked_findings_with_the_grade(self):
        self.login(self.alice)
        self.client.post(
            self.url,
            {
                "rubric": "on",
                "grade": 2,
                "f_microaneurysms": "on",
                "f_haem_ST": "1",
                "f_exudates_fovea": "on",
                "macular_oedema": "on",
            },
        )
        grade = Grade.objects.get(image=self.image)
        self.assertEqual(
            grade.findings,
            {
                "microaneurysms": True,
                "haemorrhages": ["ST"],
                "hard_exudates": True,
                "exudates_near_fovea": True,
            },
        )
        self.assertEqual(grade.derived_grade_id, 2)

    def test_an_override_without_a_reason_is_refused_and_the_findings_kept(self):
        self.login(self.alice)
        response = self.client.post(
            self.url, {"rubric": "on", "grade": 1, "f_irma_SN": "on", "notes": "keep me"}
        )
        self.assertEqual(response.status_code, 400)
        self.assertContains(response, "give a reason", status_code=400)
        self.assertContains(response, 'name="f_irma_SN" value="on"', status_code=400)
        self.assertContains(response, "keep me", status_code=400)
        self.assertFalse(Grade.objects.filter(image=self.image).exists())

    def test_a_grade_with_nothing_ticked_is_recorded_as_a_plain_grade(self):
        self.login(self.alice)
        self.client.post(self.url, {"rubric": "on", "grade": 2})
        grade = Grade.objects.get(image=self.image)
        self.assertFalse(grade.rubric_used)
        self.assertIsNone(grade.derived_grade_id)

    def test_no_findings_and_no_dr_is_a_rubric_grade(self):
        self.login(self.alice)
        self.client.post(self.url, {"rubric": "on", "grade": 0})
        grade = Grade.objects.get(image=self.image)
        self.assertTrue(grade.rubric_used)
        self.assertEqual(grade.derived_grade_id, 0)

    def test_the_image_history_shows_findings_and_the_override(self):
        grade_submit(
            image=self.image,
            grader=self.alice,
            choice=GradeInput(grade=2, findings=SEVERE_BY_BEADING, override_reason="artefact"),
        )
        self.login(self.rita)
        page = self.client.get(reverse("image_detail", args=[self.image.pk]))
        self.assertContains(page, "Findings: MA; VB ST, IT")
        self.assertContains(page, "override")
        self.assertContains(page, "artefact")


class RubricExportTests(GradingTestCase):
    def test_the_grades_csv_and_the_api_carry_the_findings(self):
        image = image_make()
        grade_submit(
            image=image,
            grader=self.alice,
            choice=GradeInput(grade=2, findings=SEVERE_BY_BEADING, override_reason="artefact"),
        )
        self.login(self.rita)
        response = self.client.get(reverse("export_grades_csv"))
        rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
        row = next(r for r in rows if r["grader"] == "alice")
        self.assertEqual(row["derived_grade"], "3")
        self.assertEqual(row["grade"], "2")
        self.assertEqual(row["override_reason"], "artefact")
        self.assertEqual(row["finding_venous_beading_quadrants"], "ST IT")
        self.assertEqual(row["finding_microaneurysms"], "1")
        self.assertEqual(row["finding_irma_quadrants"], "")

        api = self.client.get(reverse("api_image_grades", args=[image.pk])).json()
        entry = next(g for g in api["results"] if g["grader"] == "alice")
        self.assertEqual(entry["findings"]["venous_beading"], ["ST", "IT"])
        self.assertEqual(entry["derived_grade"], 3)
        self.assertEqual(entry["override_reason"], "artefact")
