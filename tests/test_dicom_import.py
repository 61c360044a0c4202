"""DICOM Ophthalmic Photography in: browser upload, ``manage.py import_images`` and the background
import; tags mapped onto patient, visit and eye; pseudonyms; one image per SOP instance; a clear
message for every kind of DICOM file that is refused. Test data: synthetic OP instances
(grading.dicom_samples) built from synthetic photographs, in the three transfer syntaxes."""

from __future__ import annotations

import datetime as dt
import io
import tempfile
import zipfile
from io import StringIO
from pathlib import Path
from unittest import mock

from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse
from pydicom.uid import UID, generate_uid

from grading.dicom_samples import (
    BASIC_TEXT_SR_STORAGE,
    CT_IMAGE_STORAGE,
    dataset_bytes,
    op_dataset,
    op_instance_bytes,
)
from grading.models import Image, Job, Patient
from grading.services.dicom import patient_pseudonym_for
from grading.tasks import images_import
from tests.factories import fundus_jpeg_bytes
from tests.factories_grading import GradingTestCase
from tests.factories_jobs import BrokerMixin

URL = reverse("upload")
ENQUEUE = "grading.services.predictions.images_predict_enqueue"


def photo_jpeg(seed: int) -> bytes:
    return fundus_jpeg_bytes(size=160, seed=seed)


def dcm(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/dicom")


class DicomTestCase(GradingTestCase):
    def setUp(self):
        patcher = mock.patch(ENQUEUE, return_value=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    def upload(self, *files: SimpleUploadedFile, patient_id: str = "P-FORM"):
        self.login(self.alice)
        data = {"patient_id": patient_id, "eye": "U", "files": list(files)}
        return self.client.post(URL, data, follow=True)  # POST/redirect/GET


class DicomUploadTests(DicomTestCase):
    def test_each_transfer_syntax_lands_under_the_pseudonymised_patient_visit_and_eye(self):
        files = [
            dcm("jpeg.dcm", op_instance_bytes(jpeg=photo_jpeg(1), syntax="jpeg", laterality="R")),
            dcm("j2k.dcm", op_instance_bytes(jpeg=photo_jpeg(2), syntax="j2k", laterality="L")),
            dcm("raw.dcm", op_instance_bytes(jpeg=photo_jpeg(3), syntax="raw", laterality="L")),
        ]
        response = self.upload(*files)
        self.assertContains(response, "<strong>3</strong> stored")
        pseudonym = patient_pseudonym_for(patient_id="SYN-0001")
        self.assertRegex(pseudonym, r"^dcm-[0-9a-f]{24}$")
        patient = Patient.objects.get(pseudonym=pseudonym)
        self.assertFalse(Patient.objects.filter(pseudonym__in=["SYN-0001", "P-FORM"]).exists())
        self.assertEqual((patient.name, patient.birth_date), ("", None))
        images = {image.original_filename: image for image in Image.objects.all()}
        self.assertEqual(images["jpeg.dcm"].eye, "R")
        self.assertEqual((images["j2k.dcm"].eye, images["raw.dcm"].eye), ("L", "L"))
        for image in images.values():
            self.assertEqual(image.patient, patient)
            self.assertEqual(image.acquired_on, dt.date(2024, 3, 5))
            self.assertEqual(image.grading_state, Image.GradingState.PENDING)
            self.assertTrue(image.sop_instance_uid and image.study_instance_uid)
        # The camera's JPEG is stored byte for byte; the others losslessly as PNG.
        self.assertEqual(images["jpeg.dcm"].file.open("rb").read(), photo_jpeg(1))
        self.assertTrue(images["raw.dcm"].file.name.endswith(".png"))
        # It can be graded: the grading page opens on it.
        page = self.client.get(reverse("grade_image", args=[images["raw.dcm"].pk]))
        self.assertEqual(page.status_code, 200)

    def test_dicom_files_inside_a_zip_are_imported(self):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("series/1.dcm", op_instance_bytes(jpeg=photo_jpeg(8), laterality="L"))
        response = self.upload(SimpleUploadedFile("series.zip", buffer.getvalue()))
        self.assertContains(response, "<strong>1</strong> stored")
        self.assertEqual(Image.objects.get().eye, "L")

    def test_the_same_sop_instance_twice_is_one_image(self):
        uid = generate_uid()
        first = op_instance_bytes(jpeg=photo_jpeg(4), syntax="raw", sop_uid=uid)
        # The same instance sent again, re-encoded by a PACS: other bytes, same SOP instance.
        again = op_instance_bytes(jpeg=photo_jpeg(4), syntax="j2k", sop_uid=uid)
        self.upload(dcm("a.dcm", first))
        response = self.upload(dcm("b.dcm", again))
        self.assertContains(response, "Already stored as image")
        self.assertEqual(Image.objects.filter(sop_instance_uid=uid).count(), 1)

    def test_every_refused_dicom_file_says_why_and_the_good_one_is_stored(self):
        jpeg = photo_jpeg(5)
        ct = op_dataset(jpeg=jpeg, syntax="raw")
        ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        ct.Modality = "CT"
        sr = op_dataset(jpeg=jpeg, syntax="raw")
        sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR_STORAGE
        del sr.PixelData
        multi = op_dataset(jpeg=jpeg, syntax="raw")
        multi.NumberOfFrames = 2
        video = op_dataset(jpeg=jpeg, syntax="jpeg")
        video.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.102")
        response = self.upload(
            dcm("notes.dcm", b"not a dicom file at all" * 10),
            dcm("ct.dcm", dataset_bytes(ct)),
            dcm("sr.dcm", dataset_bytes(sr)),
            dcm("multi.dcm", dataset_bytes(multi)),
            dcm("video.dcm", dataset_bytes(video)),
            dcm("nolat.dcm", op_instance_bytes(jpeg=jpeg, syntax="raw", laterality="")),
            dcm("cut.dcm", op_instance_bytes(jpeg=jpeg, syntax="jpeg")[:-100]),
            dcm("good.dcm", op_instance_bytes(jpeg=photo_jpeg(6), syntax="jpeg")),
        )
        for expected in (
            "this is not a DICOM file",
            "CT Image Storage (modality CT), not an ophthalmic photograph",
            "Basic Text SR Storage",
            "holds 2 frames (a multi-frame image)",
            "MPEG-4 AVC/H.264 High Profile / Level 4.1 (1.2.840.10008.1.2.4.102) cannot be decoded",
            "gives no laterality (ImageLaterality or Laterality)",
            "the DICOM file is damaged or truncated",
        ):
            self.assertContains(response, expected)
        self.assertContains(response, "<strong>1</strong> stored")
        self.assertEqual(
            list(Image.objects.values_list("original_filename", flat=True)), ["good.dcm"]
        )

    @override_settings(FUNDUS_DICOM_KEEP_IDENTIFIERS=True, FUNDUS_DICOM_KEEP_DEMOGRAPHICS=True)
    def test_the_settings_may_keep_identifiers_names_and_birth_dates(self):
        self.upload(dcm("a.dcm", op_instance_bytes(jpeg=photo_jpeg(7), patient_id="SYN-KEEP")))
        patient = Patient.objects.get(pseudonym="SYN-KEEP")
        self.assertEqual(
            (patient.name, patient.birth_date), ("Synthetic^Patient", dt.date(1960, 1, 1))
        )

    def test_the_pseudonym_depends_on_the_key(self):
        with override_settings(FUNDUS_PSEUDONYM_KEY="key-one"):
            one = patient_pseudonym_for(patient_id="SYN-0001")
        with override_settings(FUNDUS_PSEUDONYM_KEY="key-two"):
            two = patient_pseudonym_for(patient_id="SYN-0001")
        self.assertNotEqual(one, two)
        self.assertNotIn("SYN", one + two)

    def test_the_settings_page_shows_what_dicom_import_keeps(self):
        self.login(self.adam)
        page = self.client.get(reverse("workbench_settings"))
        self.assertContains(page, "DICOM import")
        self.assertContains(page, "pseudonymised (keyed hash, key derived from SECRET_KEY")
        self.assertContains(page, "Names and birth dates: not stored")


class DicomImportCommandTests(DicomTestCase):
    def test_a_folder_of_dicom_files_is_imported_and_rejects_are_reported(self):
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            (root / "series").mkdir()
            for index, (syntax, side) in enumerate((("jpeg", "R"), ("j2k", "L"), ("raw", "R"))):
                data = op_instance_bytes(
                    jpeg=photo_jpeg(10 + index), syntax=syntax, laterality=side,
                    patient_id="SYN-0042", study_date="20230102",
                )  # fmt: skip
                (root / "series" / f"{syntax}.dcm").write_bytes(data)
            (root / "series" / "nolat.dcm").write_bytes(
                op_instance_bytes(jpeg=photo_jpeg(13), laterality="")
            )
            out, err = StringIO(), StringIO()
            call_command(
                "import_images", "--ungraded", folder, "--no-progress", stdout=out, stderr=err
            )
            call_command(
                "import_images", "--ungraded", folder, "--no-progress", stdout=out, stderr=err
            )
        self.assertIn("Imported 3 image(s)", out.getvalue())
        self.assertIn("3 duplicate(s) skipped", out.getvalue())
        self.assertIn("nolat.dcm: the DICOM header gives no laterality", err.getvalue())
        patient = Patient.objects.get(pseudonym=patient_pseudonym_for(patient_id="SYN-0042"))
        self.assertEqual(
            sorted(patient.images.values_list("eye", "acquired_on")),
            [("L", dt.date(2023, 1, 2)), ("R", dt.date(2023, 1, 2)), ("R", dt.date(2023, 1, 2))],
        )


@override_settings(FUNDUS_UPLOAD_INLINE_MAX_FILES=1)
class DicomBackgroundImportTests(BrokerMixin, DicomTestCase):
    def test_a_large_dicom_upload_is_imported_by_the_background_job(self):
        staging = tempfile.mkdtemp(prefix="funduscope-staging-")
        with override_settings(FUNDUS_UPLOAD_STAGING_DIR=Path(staging)):
            with self.captureOnCommitCallbacks(execute=True):
                self.upload(
                    dcm("a.dcm", op_instance_bytes(jpeg=photo_jpeg(20), laterality="L")),
                    dcm("b.dcm", op_instance_bytes(jpeg=photo_jpeg(21), laterality="")),
                )
            job = Job.objects.get(kind=Job.Kind.IMAGES_IMPORT)
            images_import.apply(args=[job.pk], task_id=job.celery_task_id)
        job.refresh_from_db()
        self.assertEqual(
            (job.state, job.result["accepted"], job.result["rejected"]), ("succeeded", 1, 1)
        )
        image = Image.objects.get()
        self.assertEqual(
            (image.patient.pseudonym, image.eye),
            (patient_pseudonym_for(patient_id="SYN-0001"), "L"),
        )
