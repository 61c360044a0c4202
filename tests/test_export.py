"""CSV exports of grades and predictions: contents, permissions, and streaming in bounded memory."""

from __future__ import annotations

import csv
import io
import tracemalloc
from unittest import mock

from django.http import StreamingHttpResponse

from grading.models import Grade, Image
from grading.selectors import exports as export_selectors
from tests.base import BaseTestCase
from tests.factories import patient_make
from tests.factories_review import (
    grade_correct,
    grade_make,
    image_confirm,
    images_bulk_make,
    model_version_make,
    prediction_make,
)


def read_csv(response) -> list[dict[str, str]]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


class ExportContentTests(BaseTestCase):
    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        patient = patient_make("PX-17")
        (cls.image,) = images_bulk_make(1, patient=patient)
        cls.first = grade_make(image=cls.image, grader=cls.alice, value=1)
        cls.correction = grade_correct(
            cls.first, value=2, macular_oedema=True, notes='=HYPERLINK("http://evil")'
        )
        grade_make(image=cls.image, grader=cls.bob, ungradable=True)
        image_confirm(image=cls.image, method=Image.ConfirmationMethod.ADJUDICATION, value=2)
        cls.v1 = model_version_make("v1")
        cls.v2 = model_version_make("v2")
        prediction_make(
            image=cls.image, model_version=cls.v1, grade=1, probabilities=[0.1, 0.5, 0.2, 0.1, 0.1]
        )
        prediction_make(image=cls.image, model_version=cls.v2, grade=2)

    def test_it_needs_the_export_permission(self):
        for user in (self.alice, self.nora):
            self.login(user)
            self.assertEqual(self.client.get("/export/grades.csv").status_code, 403)
            self.assertEqual(self.client.get("/export/predictions.csv").status_code, 403)

    def test_grades_export_has_one_row_per_grade_with_the_image_and_history(self):
        self.login(self.rita)
        response = self.client.get("/export/grades.csv")
        self.assertEqual(response["Content-Type"], "text/csv; charset=utf-8")
        self.assertIn("attachment;", response["Content-Disposition"])
        rows = read_csv(response)
        self.assertEqual(len(rows), 3)
        first, correction, bobs = rows
        self.assertEqual(first["image_sha256"], self.image.sha256)
        self.assertEqual(first["patient"], "PX-17")
        self.assertEqual(first["eye"], "R")
        self.assertEqual(first["grader"], "alice")
        self.assertEqual(first["superseded_by_grade_id"], str(self.correction.pk))
        self.assertEqual(correction["supersedes_grade_id"], str(self.first.pk))
        self.assertEqual(correction["macular_oedema"], "1")
        self.assertEqual((bobs["grade"], bobs["ungradable"]), ("", "1"))
        self.assertEqual(bobs["image_confirmed_grade"], "2")
        self.assertEqual(bobs["image_confirmation_method"], "adjudication")

    def test_both_exports_carry_the_dicom_uids_when_known(self):
        Image.objects.filter(pk=self.image.pk).update(
            study_instance_uid="1.2.826.0.1.3680043.8.498.1",
            sop_instance_uid="1.2.826.0.1.3680043.8.498.2",
        )
        self.login(self.rita)
        for url in ("/export/grades.csv", "/export/predictions.csv"):
            row = read_csv(self.client.get(url))[0]
            self.assertEqual(row["study_instance_uid"], "1.2.826.0.1.3680043.8.498.1")
            self.assertEqual(row["sop_instance_uid"], "1.2.826.0.1.3680043.8.498.2")

    def test_free_text_cannot_become_a_spreadsheet_formula(self):
        self.login(self.rita)
        correction = read_csv(self.client.get("/export/grades.csv"))[1]
        self.assertEqual(correction["notes"], '\'=HYPERLINK("http://evil")')

    def test_predictions_export_has_a_probability_column_per_grade(self):
        self.login(self.rita)
        rows = read_csv(self.client.get("/export/predictions.csv"))
        self.assertEqual([row["model_version"] for row in rows], ["v1", "v2"])
        self.assertEqual(
            [rows[0][f"p_grade_{value}"] for value in range(5)], ["0.1", "0.5", "0.2", "0.1", "0.1"]
        )
        self.assertEqual(rows[0]["predicted_grade"], "1")
        self.assertEqual(rows[0]["image_confirmed_grade"], "2")
        self.assertEqual(rows[0]["image_sha256"], self.image.sha256)
        self.assertEqual(rows[0]["patient"], "PX-17")

    def test_predictions_export_can_be_limited_to_one_version(self):
        self.login(self.rita)
        rows = read_csv(self.client.get("/export/predictions.csv", {"version": self.v2.pk}))
        self.assertEqual([row["model_version"] for row in rows], ["v2"])
        self.assertEqual(self.client.get("/export/predictions.csv?version=abc").status_code, 400)
        self.assertEqual(self.client.get("/export/predictions.csv?version=999999").status_code, 404)


class ExportStreamingTests(BaseTestCase):
    """The response streams: one CSV line per item, produced while the client reads, from a
    database iterator, so memory does not grow with the number of rows."""

    def grades_bulk(self, count: int) -> None:
        (image,) = images_bulk_make(1)
        Grade.objects.bulk_create(
            [
                Grade(image=image, grader=self.alice, grade_id=i % 5, notes=f"note {i}")
                for i in range(count)
            ],
            batch_size=2000,
        )

    def consume_peak(self) -> tuple[int, int]:
        """(tracemalloc peak bytes, CSV bytes) while reading the whole grades export."""
        tracemalloc.start()
        try:
            response = self.client.get("/export/grades.csv")
            total = sum(len(chunk) for chunk in response.streaming_content)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return peak, total

    def test_it_streams_one_row_at_a_time(self):
        self.grades_bulk(30)
        self.login(self.rita)
        response = self.client.get("/export/grades.csv")
        self.assertIsInstance(response, StreamingHttpResponse)
        self.assertTrue(response.streaming)
        chunks = iter(response.streaming_content)
        self.assertEqual(next(chunks).decode().strip(), ",".join(export_selectors.GRADE_COLUMNS))
        first_row = next(chunks).decode()
        self.assertEqual(first_row.count("\n"), 1)  # one line: produced row by row
        self.assertIn("note 0", first_row)
        self.assertEqual(sum(1 for _ in chunks), 29)

    def test_memory_stays_flat_when_the_export_grows_fourfold(self):
        # A small chunk size keeps this quick; bench/export_memory.py measures 10k vs 100k rows
        # with the real one.
        self.login(self.rita)
        with mock.patch.object(export_selectors, "EXPORT_CHUNK_SIZE", 200):
            self.grades_bulk(2000)
            self.consume_peak()  # warm up: query compilation and imports are not rows
            small_peak, small_bytes = self.consume_peak()
            self.grades_bulk(6000)
            large_peak, large_bytes = self.consume_peak()
        self.assertGreater(large_bytes, 3.5 * small_bytes)
        # Materialising the rows would need more memory than the CSV text itself; streaming needs
        # about one chunk, whatever the number of rows.
        self.assertLess(large_peak, 1.5 * small_peak + 64 * 1024, (small_peak, large_peak))
        self.assertLess(large_peak, large_bytes / 2, (large_peak, large_bytes))
