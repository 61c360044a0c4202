"""The C-STORE listener over loopback, with pynetdicom as the real sending client (as a camera or
PACS would be): a series in one association, a refused SOP class, an unknown calling AE, and a
connection dropped in the middle of an instance. Each association is one job on /jobs/, and
nothing is ever half-stored. Runs on SQLite and on PostgreSQL (CI runs both)."""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.test import TransactionTestCase
from django.urls import reverse
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from grading.dicom_samples import CT_IMAGE_STORAGE, SYNTAXES, op_dataset, op_instance_bytes
from grading.models import Image, Job
from grading.services.dicom import OP_SOP_CLASS, patient_pseudonym_for
from grading.services.dicom_receiver import dicom_listener_start
from grading.services.jobs import JobStateError, job_retry
from tests.base import MediaMixin
from tests.factories import fundus_jpeg_bytes, user_make
from tests.factories_grading import MigrationDataKeptMixin

CALLING_AE = "CAMERA1"


def photo(seed: int) -> bytes:
    return fundus_jpeg_bytes(size=160, seed=seed)


class ListenerTests(MigrationDataKeptMixin, MediaMixin, TransactionTestCase):
    def setUp(self):
        self.server = dicom_listener_start(
            host="127.0.0.1", port=0, ae_title="FUNDUSCOPE", allowed_aes=[CALLING_AE], block=False
        )
        self.addCleanup(self.server.shutdown)
        self.port = self.server.server_address[1]

    def associate(self, calling_ae: str = CALLING_AE, *, sop_classes=(OP_SOP_CLASS,)):
        ae = AE(ae_title=calling_ae)
        # One context per transfer syntax, as storescu proposes them: an acceptor picks one
        # syntax per context.
        ae.requested_contexts = [
            build_context(sop_class, syntax)
            for sop_class in sop_classes
            for syntax in SYNTAXES.values()
        ]
        return ae.associate("127.0.0.1", self.port, ae_title="FUNDUSCOPE")

    def wait_for_job(self, state: str) -> Job:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            job = Job.objects.filter(kind=Job.Kind.DICOM_RECEIVE).first()
            if job is not None and job.state == state:
                return job
            time.sleep(0.05)
        self.fail(f"no DICOM job reached {state}: {list(Job.objects.values('state', 'message'))}")

    def stored_files(self) -> list[Path]:
        return [path for path in Path(settings.MEDIA_ROOT).rglob("*") if path.is_file()]

    def test_a_series_in_one_association_is_one_job_and_can_be_graded(self):
        assoc = self.associate()
        self.assertTrue(assoc.is_established)
        statuses = []
        for index, (syntax, side) in enumerate((("jpeg", "R"), ("j2k", "L"), ("raw", "L"))):
            dataset = op_dataset(jpeg=photo(index), syntax=syntax, laterality=side,
                                 patient_id="SYN-7", study_date="20240611")  # fmt: skip
            statuses.append(assoc.send_c_store(dataset).Status)
        statuses.append(assoc.send_c_store(dataset).Status)  # the same instance again
        assoc.release()
        self.assertEqual(statuses, [0, 0, 0, 0])
        job = self.wait_for_job(Job.State.SUCCEEDED)
        self.assertEqual((job.result["accepted"], job.result["duplicates"]), (3, 1))
        self.assertEqual(job.params["calling_ae"], CALLING_AE)
        images = Image.objects.order_by("id")
        self.assertEqual(
            [(i.patient.pseudonym, i.eye, i.acquired_on.isoformat()) for i in images],
            [(patient_pseudonym_for(patient_id="SYN-7"), eye, "2024-06-11") for eye in "RLL"],
        )
        admin = user_make("adam", "admin")
        self.client.force_login(admin)
        self.assertContains(self.client.get(reverse("jobs")), "DICOM photographs received")
        detail = self.client.get(reverse("job_detail", args=[job.pk]))
        self.assertContains(detail, "3 stored, 1 already stored, 0 refused")
        grade_page = self.client.get(reverse("grade_image", args=[images[0].pk]))
        self.assertEqual(grade_page.status_code, 200)

    def test_pynetdicoms_storescu_sends_a_folder_of_photographs(self):
        with tempfile.TemporaryDirectory() as folder:
            for index, syntax in enumerate(SYNTAXES):
                data = op_instance_bytes(jpeg=photo(30 + index), syntax=syntax, patient_id="SYN-9")
                Path(folder, f"{syntax}.dcm").write_bytes(data)
            command = [sys.executable, "-m", "pynetdicom", "storescu", "127.0.0.1", str(self.port),
                       folder, "-r", "-cx", "-aet", CALLING_AE, "-aec", "FUNDUSCOPE"]  # fmt: skip
            sent = subprocess.run(command, capture_output=True, text=True, timeout=60)
        self.assertEqual(sent.returncode, 0, sent.stderr)
        job = self.wait_for_job(Job.State.SUCCEEDED)
        self.assertEqual(job.result["accepted"], 3)
        pseudonym = patient_pseudonym_for(patient_id="SYN-9")
        self.assertEqual(Image.objects.filter(patient__pseudonym=pseudonym).count(), 3)

    def test_a_refused_sop_class_and_an_unreadable_photograph_get_failure_statuses(self):
        assoc = self.associate(sop_classes=(OP_SOP_CLASS, CT_IMAGE_STORAGE))
        ct = op_dataset(jpeg=photo(10), syntax="raw")
        ct.SOPClassUID = CT_IMAGE_STORAGE
        ct.Modality = "CT"
        refused = assoc.send_c_store(ct)
        no_eye = assoc.send_c_store(op_dataset(jpeg=photo(11), syntax="raw", laterality=""))
        good = assoc.send_c_store(op_dataset(jpeg=photo(12), syntax="raw"))
        assoc.release()
        self.assertEqual(refused.Status, 0x0122)
        self.assertEqual(no_eye.Status, 0xC000)
        self.assertIn("no laterality", no_eye.ErrorComment)
        self.assertEqual(good.Status, 0)
        job = self.wait_for_job(Job.State.SUCCEEDED)
        self.assertEqual((job.result["accepted"], job.result["rejected"]), (1, 2))
        self.assertEqual(Image.objects.count(), 1)

    def test_an_unknown_calling_ae_is_rejected_and_nothing_is_stored(self):
        assoc = self.associate("STRANGER")
        self.assertTrue(assoc.is_rejected)
        self.assertFalse(Job.objects.exists())
        self.assertFalse(Image.objects.exists())

    def test_a_connection_dropped_mid_instance_keeps_what_was_answered_and_nothing_half(self):
        assoc = self.associate()
        self.assertEqual(assoc.send_c_store(op_dataset(jpeg=photo(20), syntax="raw")).Status, 0)
        # The second instance is cut off mid-transfer: its command and the first fragments of
        # its data set are sent, then the connection is dropped.
        dataset = op_dataset(jpeg=photo(21), syntax="raw")
        fragments = list(_c_store_fragments(assoc, dataset))
        self.assertGreater(len(fragments), 2)
        for fragment in fragments[:-1]:
            assoc.dul.socket.send(fragment)
        assoc.dul.socket.close()
        assoc.abort()
        job = self.wait_for_job(Job.State.FAILED)
        self.assertIn("nothing of an unfinished instance was kept", job.error)
        with self.assertRaisesMessage(JobStateError, "sender resends"):
            job_retry(job=job)  # the sender resends, not Funduscope
        self.assertEqual(Image.objects.count(), 1)
        self.assertEqual(len(self.stored_files()), 1)
        # The listener keeps running: the next association is served.
        again = self.associate()
        self.assertEqual(again.send_c_store(dataset).Status, 0)
        again.release()
        self.assertEqual(Image.objects.count(), 2)


def _c_store_fragments(assoc, dataset: Dataset):
    """The encoded P-DATA-TF PDUs of a C-STORE request, as pynetdicom would send them."""
    from pynetdicom.pdu import P_DATA_TF

    context = assoc._get_valid_context(OP_SOP_CLASS, ExplicitVRLittleEndian, "scu")
    primitive = C_STORE()
    primitive.MessageID = 99
    primitive.AffectedSOPClassUID = OP_SOP_CLASS
    primitive.AffectedSOPInstanceUID = dataset.SOPInstanceUID
    primitive.Priority = 2
    # Explicit VR little endian, the negotiated context's syntax.
    primitive.DataSet = io.BytesIO(encode(dataset, False, True))
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    for data in message.encode_msg(context.context_id, assoc.acceptor.maximum_length):
        pdu = P_DATA_TF()
        pdu.from_primitive(data)
        yield pdu.encode()
