"""The DICOM receiver: a C-STORE SCP (pynetdicom) that stores Ophthalmic Photography instances
sent by fundus cameras and PACS through the upload's import path (``upload_item_import``).

- Associations are accepted only from the calling AE titles in ``FUNDUS_DICOM_ALLOWED_AES``; any
  other is rejected at association time (A-ASSOCIATE-RJ, "calling AE title not recognised").
- Each association that sends photographs is one job (``Job.Kind.DICOM_RECEIVE``) on /jobs/: its
  message counts what was stored, found already stored and refused as the instances arrive; it
  succeeds at the release, and fails (keeping what was stored) if the sender aborts or the
  connection drops.
- Each instance is answered only once it is stored whole (image row and file, in one
  transaction): 0x0000 stored (or already stored), 0x0122 SOP class refused (not OP), 0xC000 cannot
  be imported (no laterality, multi-frame, undecodable; the reason in the ErrorComment), 0xA700 out
  of resources (database error). An instance cut off mid-transfer never reaches the handler, so a
  dropped connection leaves nothing half-stored.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE

from grading.models import Job
from grading.services.dicom import OP_SOP_CLASS
from grading.services.jobs import JobAbandoned, job_fail, job_progress_write, job_succeed
from grading.services.uploads import (
    PatientHolder,
    UploadOutcome,
    UploadVisit,
    predictions_enqueue_quietly,
    upload_item_import,
)

logger = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_SOP_CLASS_REFUSED = 0x0122
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
UNKNOWN_PATIENT = "dicom-no-patient-id"
VERIFICATION = UID("1.2.840.10008.1.1")
# How long a closed connection waits for the association's own thread to say it was released.
RELEASE_SETTLE_SECONDS = 1.0


@dataclass
class ReceiveSession:
    """One association's job and outcomes."""

    calling_ae: str
    peer: str
    job_id: int | None = None
    finished: bool = False
    # The release (association thread) and the close (network thread) may both try to finish.
    finish_lock: threading.Lock = field(default_factory=threading.Lock)
    outcomes: list[UploadOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def summary(self) -> str:
        return (
            f"{len(self.outcomes)} instance(s) received from {self.calling_ae}: "
            f"{self.count('accepted')} stored, {self.count('duplicate')} already stored, "
            f"{self.count('rejected')} refused"
        )

    def result(self) -> dict[str, Any]:
        return {
            "calling_ae": self.calling_ae,
            "peer": self.peer,
            "accepted": self.count("accepted"),
            "duplicates": self.count("duplicate"),
            "rejected": self.count("rejected"),
            "outcomes": [
                {"name": o.name, "status": o.status, "message": o.message, "image_id": o.image_id}
                for o in self.outcomes
            ],
            "message": self.summary,
        }


# Each association's session, for as long as pynetdicom keeps the association.
_SESSIONS: weakref.WeakKeyDictionary[Association, ReceiveSession] = weakref.WeakKeyDictionary()


def _session(assoc: Association) -> ReceiveSession:
    session = _SESSIONS.get(assoc)
    if session is None:
        requestor = assoc.requestor
        session = ReceiveSession(
            calling_ae=str(requestor.ae_title).strip(),
            peer=f"{requestor.address}:{requestor.port}",
        )
        _SESSIONS[assoc] = session
    return session


def dicom_receive_job_start(*, session: ReceiveSession) -> Job:
    """The association's job, running from its first instance (an echo makes none)."""
    now = timezone.now()
    job = Job(
        kind=Job.Kind.DICOM_RECEIVE,
        state=Job.State.RUNNING,
        params={"calling_ae": session.calling_ae, "peer": session.peer},
        worker=f"dicom_listener@{socket.gethostname()}"[:255],
        started_at=now,
        heartbeat_at=now,
        message=f"Receiving from {session.calling_ae}",
    )
    job.full_clean(validate_constraints=False)
    job.save()
    return job


def _failure(status: int, comment: str) -> Dataset:
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = comment[:64]  # LO: at most 64 characters
    return answer


def dicom_instance_store(*, session: ReceiveSession, dataset_bytes: bytes, sop_class: str,
                         sop_instance: str) -> Dataset | int:  # fmt: skip
    """Store one received instance through the upload's import path; the C-STORE status."""
    name = f"{session.calling_ae}/{sop_instance or 'instance'}"
    if sop_class != OP_SOP_CLASS:
        outcome = UploadOutcome(name, "rejected", f"SOP class {sop_class} is not OP; refused.")
        session.outcomes.append(outcome)
        status: Dataset | int = _failure(
            STATUS_SOP_CLASS_REFUSED, "Only Ophthalmic Photography 8 Bit is accepted"
        )
    else:
        # The header's PatientID names the patient; this stands in only when it has none.
        holder = PatientHolder(UploadVisit(patient_pseudonym=UNKNOWN_PATIENT))
        outcome = upload_item_import(
            name=name, data=dataset_bytes, problem="", patient=holder, uploaded_by=None
        )
        session.outcomes.append(outcome)
        status = (
            STATUS_SUCCESS
            if outcome.status in ("accepted", "duplicate")
            else _failure(STATUS_CANNOT_UNDERSTAND, outcome.message)
        )
    if session.job_id is None:
        session.job_id = dicom_receive_job_start(session=session).pk
    try:
        job_progress_write(job_id=session.job_id, percent=50, message=session.summary)
    except JobAbandoned:  # marked stale by the housekeeping: a new job for the rest
        session.job_id = dicom_receive_job_start(session=session).pk
    return status


def dicom_association_finish(*, session: ReceiveSession, how: str) -> None:
    """Close the association's job: succeeded at a release, failed at an abort or a drop."""
    if session.job_id is None:
        return
    accepted = [o.image_id for o in session.outcomes if o.status == "accepted" and o.image_id]
    if accepted:
        predictions_enqueue_quietly(accepted)
    if how == "released":
        job_succeed(job_id=session.job_id, result=session.result(), message=session.summary)
    else:
        job_fail(
            job_id=session.job_id,
            error=(
                f"The association was {how} after {len(session.outcomes)} instance(s); those "
                "answered were stored whole, nothing of an unfinished instance was kept. The "
                "sender resends what it did not get an answer for."
            ),
            message=f"Stopped ({how}): {session.summary}",
        )


def _on_store(event: evt.Event) -> Dataset | int:
    close_old_connections()
    session = _session(event.assoc)
    request = event.request
    if not isinstance(request, C_STORE):  # only C-STORE requests reach this handler
        return _failure(STATUS_CANNOT_UNDERSTAND, "Not a C-STORE request")
    try:
        return dicom_instance_store(
            session=session,
            dataset_bytes=event.encoded_dataset(),
            sop_class=str(request.AffectedSOPClassUID),
            sop_instance=str(request.AffectedSOPInstanceUID),
        )
    except DatabaseError as error:
        logger.exception("DICOM instance from %s not stored", session.calling_ae)
        return _failure(STATUS_OUT_OF_RESOURCES, f"Not stored: {error}")


def _finisher(how: str) -> Any:
    def handler(event: evt.Event) -> None:
        session = _SESSIONS.get(event.assoc)
        try:
            if session is not None and not session.finished:
                ended = _how_it_ended(event.assoc) if how == "dropped" else how
                with session.finish_lock:
                    first = not session.finished
                    session.finished = True  # a release or an abort is followed by a close
                if first:
                    dicom_association_finish(session=session, how=ended)
        finally:
            # Each association runs in threads of its own: their database connections end here.
            if threading.current_thread() is not threading.main_thread():
                connection.close()

    return handler


def _how_it_ended(assoc: Association) -> str:
    """The connection closed: after a release or an abort (pynetdicom's association thread sets
    its flag a moment after the peer may already have closed the connection), or dropped."""
    deadline = time.monotonic() + RELEASE_SETTLE_SECONDS
    while time.monotonic() < deadline:
        if assoc.is_released:
            return "released"
        if assoc.is_aborted:
            return "aborted"
        time.sleep(0.02)
    return "dropped"


def dicom_receiver_ae(*, ae_title: str, allowed_aes: list[str]) -> AE:
    """The application entity: Verification and every storage SOP class proposed are accepted
    at negotiation (so a refused one gets a C-STORE failure status, not a silent rejection)."""
    ae = AE(ae_title=ae_title)
    ae.require_calling_aet = list(allowed_aes)
    ae.add_supported_context(VERIFICATION)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    return ae


# pynetdicom's event constants are typed as plain tuples, which its own signature does not accept.
HANDLERS: list[Any] = [
    (evt.EVT_C_STORE, _on_store),
    (evt.EVT_RELEASED, _finisher("released")),
    (evt.EVT_ABORTED, _finisher("aborted")),
    (evt.EVT_CONN_CLOSE, _finisher("dropped")),
]


def dicom_listener_start(
    *, host: str, port: int, ae_title: str, allowed_aes: list[str], block: bool
) -> Any:
    """Listen for associations; ``block`` False returns the running server (tests, benchmark),
    True serves until interrupted. Refuses to start with no calling AE title allowed (pynetdicom
    would then accept any)."""
    if not allowed_aes:
        raise ValueError(
            "No calling AE title is allowed: set FUNDUS_DICOM_ALLOWED_AES (comma-separated) to "
            "the AE titles of the cameras and PACS that may send photographs."
        )
    ae = dicom_receiver_ae(ae_title=ae_title, allowed_aes=allowed_aes)
    return ae.start_server((host, port), block=block, evt_handlers=HANDLERS)
