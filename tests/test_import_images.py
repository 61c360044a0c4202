from __future__ import annotations

import csv
import tempfile
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from grading.models import Grade, Image, Patient
from tests.base import BaseTestCase
from tests.conftest import FUNDUS_DATASET_DIR
from tests.factories import fundus_jpeg_bytes


def write_seed_layout(root: Path, per_grade: dict[str, int]) -> None:
    for folder, count in per_grade.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            (root / folder / f"img{index}.jpg").write_bytes(fundus_jpeg_bytes())


def run_import(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_images", *args, "--no-progress", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


class ImportImagesTests(BaseTestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="import-"))

    def test_it_imports_the_seed_layout_as_confirmed_grades(self):
        write_seed_layout(self.tmp, {"0": 2, "2": 1, "4": 1})
        out, _ = run_import(str(self.tmp))
        self.assertIn("Imported 4 image(s)", out)
        self.assertEqual(Image.objects.filter(grading_state="confirmed").count(), 4)
        self.assertEqual(
            sorted(Image.objects.values_list("confirmed_grade_id", flat=True)), [0, 0, 2, 4]
        )
        grade = Grade.objects.first()
        self.assertEqual(grade.kind, Grade.Kind.IMPORT)
        self.assertIsNone(grade.grader)
        self.assertEqual(grade.source, f"import:{self.tmp.name}")
        self.assertEqual(Image.objects.first().confirmation_method, "import")
        # Without patient ids every image is its own patient.
        self.assertEqual(Patient.objects.count(), 4)

    def test_a_reimport_adds_nothing(self):
        write_seed_layout(self.tmp, {"1": 2, "3": 1})
        run_import(str(self.tmp))
        out, _ = run_import(str(self.tmp))
        self.assertIn("Imported 0 image(s)", out)
        self.assertIn("3 duplicate(s) skipped", out)
        self.assertEqual(Image.objects.count(), 3)
        self.assertEqual(Grade.objects.count(), 3)

    def test_it_reports_and_skips_corrupt_and_non_image_files(self):
        write_seed_layout(self.tmp, {"0": 1})
        stored_before = {p for p in Path(self._media_dir).rglob("*") if p.is_file()}
        good = fundus_jpeg_bytes(seed=77, size=128)
        (self.tmp / "0" / "truncated.jpg").write_bytes(good[: len(good) // 2])
        (self.tmp / "0" / "notes.jpg").write_text("this is not a photograph")
        out, err = run_import(str(self.tmp))
        self.assertIn("Imported 1 image(s)", out)
        self.assertIn("2 file(s) rejected", out)
        self.assertIn("truncated.jpg", err)
        self.assertIn("damaged or truncated", err)
        self.assertIn("notes.jpg", err)
        self.assertIn("not an image file", err)
        self.assertEqual(Image.objects.count(), 1)
        # Nothing half-written: no stray files beside the one stored image.
        stored = {p for p in Path(self._media_dir).rglob("*") if p.is_file()} - stored_before
        self.assertEqual(len(stored), 1)

    def test_an_unknown_grade_folder_is_an_error_naming_it(self):
        write_seed_layout(self.tmp, {"0": 1, "severe-ish": 1})
        with self.assertRaisesMessage(CommandError, "'severe-ish'"):
            run_import(str(self.tmp))
        self.assertEqual(Image.objects.count(), 0)

    def test_it_imports_a_csv_with_patients_eyes_and_dates(self):
        (self.tmp / "photos").mkdir()
        rows = [
            ("photos/a.jpg", "2", "PT-1", "left", "2024-03-01"),
            ("photos/b.jpg", "0", "PT-1", "right", "2024-03-01"),
            ("photos/c.jpg", "Mild NPDR", "", "", ""),
        ]
        for index, (name, *_rest) in enumerate(rows):
            (self.tmp / name).write_bytes(fundus_jpeg_bytes(seed=500 + index))
        labels = self.tmp / "labels.csv"
        with labels.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["filename", "grade", "patient_id", "eye", "date"])
            writer.writerows(rows)
        out, _ = run_import("--labels", str(labels), str(self.tmp))
        self.assertIn("Imported 3 image(s)", out)
        patient = Patient.objects.get(pseudonym="PT-1")
        self.assertEqual(
            sorted(patient.images.values_list("eye", "confirmed_grade_id")), [("L", 2), ("R", 0)]
        )
        self.assertEqual(str(patient.images.first().acquired_on), "2024-03-01")
        self.assertEqual(Image.objects.get(original_filename="c.jpg").confirmed_grade_id, 1)

    def test_a_csv_without_the_grade_column_is_refused(self):
        labels = self.tmp / "labels.csv"
        labels.write_text("filename,diagnosis\nx.jpg,2\n")
        with self.assertRaisesMessage(CommandError, "filename,grade"):
            run_import("--labels", str(labels), str(self.tmp))


class ImportUngradedTests(BaseTestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="import-ungraded-"))

    def test_it_stores_every_photograph_under_the_folder_as_pending(self):
        (self.tmp / "clinic-a" / "2026-11").mkdir(parents=True)
        (self.tmp / "top.jpg").write_bytes(fundus_jpeg_bytes(seed=1))
        (self.tmp / "clinic-a" / "2026-11" / "deep.JPG").write_bytes(fundus_jpeg_bytes(seed=2))
        (self.tmp / "clinic-a" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
        (self.tmp / "clinic-a" / "notes.txt").write_text("camera 2")
        (self.tmp / ".cache").mkdir()
        (self.tmp / ".cache" / "hidden.jpg").write_bytes(fundus_jpeg_bytes(seed=3))
        out, err = run_import("--ungraded", str(self.tmp))
        self.assertIn("Imported 2 image(s)", out)
        self.assertIn("2 pending, to grade in the worklist", out)
        self.assertIn("1 file(s) rejected", out)
        self.assertIn("1 file(s) not named like a photograph left alone", out)
        self.assertIn("broken.jpg", err)
        self.assertIn("No prediction queued (no active model", out)
        self.assertEqual(Image.objects.filter(grading_state="pending").count(), 2)
        self.assertFalse(Grade.objects.exists())
        self.assertTrue(Image.objects.filter(confirmed_grade__isnull=False).count() == 0)

    def test_the_pending_images_wait_in_a_clinicians_worklist(self):
        from grading.selectors.worklist import images_needing_grade

        (self.tmp / "a.jpg").write_bytes(fundus_jpeg_bytes(seed=4))
        run_import("--ungraded", str(self.tmp))
        self.assertEqual(images_needing_grade(grader=self.alice).count(), 1)
        self.assertEqual(Image.objects.get().source, f"import:{self.tmp.name}")

    def test_a_rerun_skips_the_duplicates(self):
        (self.tmp / "a.jpg").write_bytes(fundus_jpeg_bytes(seed=5))
        run_import("--ungraded", str(self.tmp))
        out, _ = run_import("--ungraded", str(self.tmp))
        self.assertIn("Imported 0 image(s)", out)
        self.assertIn("1 duplicate(s) skipped", out)

    def test_it_imports_a_csv_without_grades_with_patients_eyes_and_dates(self):
        (self.tmp / "a.jpg").write_bytes(fundus_jpeg_bytes(seed=6))
        (self.tmp / "b.jpg").write_bytes(fundus_jpeg_bytes(seed=7))
        labels = self.tmp / "visits.csv"
        labels.write_text("filename,patient_id,eye,date\na.jpg,P-7,left,2026-11-02\nb.jpg,P-7,R,\n")
        out, _ = run_import("--ungraded", "--labels", str(labels), str(self.tmp))
        self.assertIn("Imported 2 image(s)", out)
        patient = Patient.objects.get(pseudonym="P-7")
        self.assertEqual(
            sorted(patient.images.values_list("eye", "grading_state")),
            [("L", "pending"), ("R", "pending")],
        )
        self.assertEqual(str(patient.images.get(eye="L").acquired_on), "2026-11-02")

    def test_a_csv_with_grades_is_refused_rather_than_dropping_them(self):
        labels = self.tmp / "labels.csv"
        labels.write_text("filename,grade\nx.jpg,2\n")
        with self.assertRaisesMessage(CommandError, "has a grade column, but --ungraded"):
            run_import("--ungraded", "--labels", str(labels), str(self.tmp))
        self.assertFalse(Image.objects.exists())

    def test_a_graded_import_of_a_csv_without_grades_points_to_the_option(self):
        labels = self.tmp / "labels.csv"
        labels.write_text("filename\nx.jpg\n")
        with self.assertRaisesMessage(CommandError, "or use --ungraded"):
            run_import("--labels", str(labels), str(self.tmp))

    def test_a_folder_without_photographs_is_an_error(self):
        (self.tmp / "readme.txt").write_text("nothing here")
        with self.assertRaisesMessage(CommandError, "holds no photographs"):
            run_import("--ungraded", str(self.tmp))


@pytest.mark.slow
class SharedDatasetImportTests(BaseTestCase):
    def test_the_shared_fundus_dataset_imports_cleanly(self):
        if not FUNDUS_DATASET_DIR.exists():
            self.skipTest(f"shared dataset not found at {FUNDUS_DATASET_DIR}")
        out, err = run_import(
            "--labels", str(FUNDUS_DATASET_DIR / "labels.csv"), str(FUNDUS_DATASET_DIR)
        )
        self.assertIn("Imported 2787 image(s)", out)
        self.assertIn("0 file(s) rejected", out)
        self.assertEqual(err, "")
        per_grade = {g: Image.objects.filter(confirmed_grade_id=g).count() for g in range(5)}
        self.assertEqual(per_grade, {0: 1436, 1: 270, 2: 736, 3: 134, 4: 211})
