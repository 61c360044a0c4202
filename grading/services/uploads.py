"""Uploading photographs in the browser: single files, several at once, or a .zip of them.

Every file is validated by ``grading.services.images.image_validate`` (decoded for real, with size and
pixel limits) and stored once: a photograph already in the database (same sha256) is reported as a
duplicate. Archives are opened defensively: the number of members and their total uncompressed size
are checked from the directory before anything is decompressed, each member is read with a hard
cap, nested archives and encrypted members are refused, and system clutter (``__MACOSX/``,
``.DS_Store``, ``Thumbs.db``) is ignored. Nothing from an archive is ever written to disk under its
own name, so paths like ``../../etc`` inside a zip are harmless.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files import File
from django.db import transaction

from grading import storage
from grading.models import Image, Job, Patient
from grading.services.dicom import dicom_patient_get, image_for_sop_instance
from grading.services.images import (
    DuplicateImage,
    ImageRejected,
    image_create,
    image_read,
    image_size_check,
)

ZIP_MAX_MEMBERS = 500
ZIP_MAX_UNCOMPRESSED_BYTES = 2 * 1024**3
ZIP_MAX_BYTES = 1024**3
SYSTEM_FILE_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
UPLOAD_SOURCE = "upload"
DICOM_SOURCE = "upload:dicom"

logger = logging.getLogger(__name__)


class UploadedFileLike(Protocol):
    """An uploaded file (Django's ``UploadedFile``) or a staged one reopened (``File``)."""

    @property
    def name(self) -> str | None: ...

    @property
    def size(self) -> int | None: ...  # Django's type; always known for a stored upload

    def read(self, size: int = -1, /) -> bytes: ...
    def seek(self, offset: int, whence: int = 0, /) -> int: ...


@dataclass(frozen=True)
class UploadOutcome:
    """What happened to one file (or one archive member)."""

    name: str
    status: str  # accepted | duplicate | rejected | ignored
    message: str
    image_id: int | None = None


@dataclass
class UploadReport:
    outcomes: list[UploadOutcome] = field(default_factory=list)
    prediction_queued: bool | None = None  # None when nothing new was stored

    def _count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def accepted(self) -> int:
        return self._count("accepted")

    @property
    def duplicates(self) -> int:
        return self._count("duplicate")

    @property
    def rejected(self) -> int:
        return self._count("rejected")

    @property
    def accepted_ids(self) -> list[int]:
        return [o.image_id for o in self.outcomes if o.status == "accepted" and o.image_id]


@dataclass(frozen=True)
class UploadVisit:
    """The patient, eye and date every file of one upload belongs to."""

    patient_pseudonym: str
    eye: str = Image.Eye.UNKNOWN
    acquired_on: dt.date | None = None


def _is_system_clutter(member_name: str) -> bool:
    parts = member_name.replace("\\", "/").split("/")
    base = parts[-1]
    return (
        "__MACOSX" in parts
        or base.lower() in SYSTEM_FILE_NAMES
        or base.startswith("._")
        or base.startswith(".")
    )


def _looks_like_zip(upload: UploadedFileLike) -> bool:
    upload.seek(0)
    head = upload.read(4)
    upload.seek(0)
    return head in (b"PK\x03\x04", b"PK\x05\x06")


def _read_capped(handle: IO[bytes], limit: int) -> bytes | None:
    """Read at most ``limit`` bytes; None when there is more (the file is over the limit)."""
    data = handle.read(limit + 1)
    return None if len(data) > limit else data


def zip_members_read(
    *, upload: UploadedFileLike, archive_name: str
) -> Iterator[tuple[str, bytes | None, str]]:
    """Yield ``(member name, bytes or None, problem)`` for each file in the archive.

    Raises ImageRejected for an archive that cannot be opened at all or breaks the limits as a whole.
    """
    per_file_limit = settings.FUNDUS_MAX_UPLOAD_BYTES
    if (upload.size or 0) > ZIP_MAX_BYTES:
        raise ImageRejected(
            f"{archive_name}: the archive is larger than {ZIP_MAX_BYTES // 1024**2} MB."
        )
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ImageRejected(f"{archive_name}: not a readable .zip archive ({error}).") from None
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        if len(members) > ZIP_MAX_MEMBERS:
            raise ImageRejected(
                f"{archive_name}: the archive holds {len(members)} files; "
                f"at most {ZIP_MAX_MEMBERS} are accepted per upload."
            )
        # The directory's sizes are checked before decompressing anything; reading below is capped
        # as well, because zipfile never yields more than a member's declared size.
        declared_total = sum(info.file_size for info in members)
        if declared_total > ZIP_MAX_UNCOMPRESSED_BYTES:
            raise ImageRejected(
                f"{archive_name}: the archive would unpack to {declared_total / 1024**2:,.0f} MB, "
                f"more than the limit of {ZIP_MAX_UNCOMPRESSED_BYTES / 1024**2:,.0f} MB."
            )
        for info in members:
            name = f"{archive_name}/{info.filename}"
            if _is_system_clutter(info.filename):
                yield name, None, "ignored"
                continue
            if info.flag_bits & 0x1:
                yield name, None, "the file is encrypted; upload it without a password."
                continue
            if info.file_size > per_file_limit:
                yield name, None, f"the file is larger than {per_file_limit / 1024**2:.0f} MB."
                continue
            try:
                with archive.open(info) as handle:
                    data = _read_capped(handle, per_file_limit)
            except (
                zipfile.BadZipFile,
                OSError,
                ValueError,
                NotImplementedError,
                EOFError,
            ) as error:
                yield name, None, f"the file could not be unpacked ({error})."
                continue
            if data is None:
                yield name, None, f"the file is larger than {per_file_limit / 1024**2:.0f} MB."
                continue
            if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
                yield name, None, "archives inside archives are not opened; upload it separately."
                continue
            yield name, data, ""


def _files_expand(
    files: Iterable[UploadedFileLike],
) -> Iterator[tuple[str, bytes | None, str]]:
    per_file_limit = settings.FUNDUS_MAX_UPLOAD_BYTES
    for upload in files:
        name = upload.name or "file"
        if _looks_like_zip(upload):
            try:
                yield from zip_members_read(upload=upload, archive_name=name)
            except ImageRejected as error:
                yield name, None, str(error).removeprefix(f"{name}: ")
            continue
        if (upload.size or 0) > per_file_limit:
            yield name, None, f"the file is larger than {per_file_limit / 1024**2:.0f} MB."
            continue
        upload.seek(0)
        yield name, upload.read(), ""


class PatientHolder:
    """The visit's patient, created at the first photograph actually stored (never for an upload
    of duplicates or rejected files only)."""

    def __init__(self, visit: UploadVisit) -> None:
        self.visit = visit
        self.patient: Patient | None = None

    def get(self) -> Patient:
        if self.patient is None:
            with transaction.atomic():
                self.patient, _ = Patient.objects.get_or_create(
                    pseudonym=self.visit.patient_pseudonym
                )
        return self.patient


def upload_item_import(
    *,
    name: str,
    data: bytes | None,
    problem: str,
    patient: PatientHolder,
    uploaded_by: User | None,
) -> UploadOutcome:
    """Validate and store one uploaded photograph (or archive member): the per-image work that
    the request (small uploads) and the background import job (large ones) share. Per-image
    additions (quality score, renderings) belong in ``image_create``, which this calls."""
    if problem == "ignored":
        return UploadOutcome(name, "ignored", "System file in the archive; ignored.")
    if data is None:
        return UploadOutcome(name, "rejected", problem)
    try:
        validated, dicom = image_read(data=data, name=name)
        image_size_check(validated=validated, name=name)
    except ImageRejected as error:
        return UploadOutcome(name, "rejected", str(error).removeprefix(f"{name}: "))
    existing = Image.objects.filter(sha256=validated.sha256).select_related("patient").first()
    if existing is None and dicom is not None:
        existing = image_for_sop_instance(sop_instance_uid=dicom.uids.sop_instance_uid)
    if existing is None:
        try:
            # A DICOM photograph's header names its patient, visit date and eye: those win over
            # the form's (the form's patient stands in when the header has no PatientID).
            image = image_create(
                validated=validated,
                patient=(
                    dicom_patient_get(
                        photograph=dicom, fallback_pseudonym=patient.visit.patient_pseudonym
                    )
                    if dicom is not None
                    else patient.get()
                ),
                eye=dicom.eye if dicom is not None else patient.visit.eye,
                acquired_on=(dicom.acquired_on if dicom else None) or patient.visit.acquired_on,
                uploaded_by=uploaded_by,
                source=DICOM_SOURCE if dicom is not None else UPLOAD_SOURCE,
                original_filename=name,
                dicom_uids=dicom.uids if dicom is not None else None,
            )
        except DuplicateImage as duplicate:  # a concurrent upload stored it first
            existing = duplicate.existing
        else:
            where = (
                f", patient {image.patient}, {image.get_eye_display().lower()} eye, from the "
                "DICOM header"
                if dicom is not None
                else ""
            )
            return UploadOutcome(
                name,
                "accepted",
                f"Stored as image #{image.pk} ({validated.width}x{validated.height}{where}).",
                image_id=image.pk,
            )
    return UploadOutcome(
        name,
        "duplicate",
        f"Already stored as image #{existing.pk} (patient {existing.patient}); not stored again.",
        image_id=existing.pk,
    )


def upload_files_process(
    *,
    files: Iterable[UploadedFileLike],
    visit: UploadVisit,
    uploaded_by: User | None,
    progress: Callable[[int, str], None] | None = None,
    total: int | None = None,
) -> UploadReport:
    """Validate and store each photograph of one visit; report per file; queue predictions."""
    report = UploadReport()
    patient = PatientHolder(visit)
    for index, (name, data, problem) in enumerate(_files_expand(files), start=1):
        report.outcomes.append(
            upload_item_import(
                name=name, data=data, problem=problem, patient=patient, uploaded_by=uploaded_by
            )
        )
        if progress is not None and total:
            # An archive counts as one uploaded file but yields many photographs.
            progress(min(99, int(100 * index / total)), f"{index} photograph(s) checked")
    if report.accepted_ids:
        report.prediction_queued = predictions_enqueue_quietly(report.accepted_ids)
    return report


# ---------------------------------------------------------------------------------------------
# Large uploads: the request only stores the files; a background job validates and imports them


def upload_is_large(files: Sequence[UploadedFileLike]) -> bool:
    """More files or bytes than a request should decode (gunicorn answers in 30 s or kills it)."""
    return (
        len(files) > settings.FUNDUS_UPLOAD_INLINE_MAX_FILES
        or sum(upload.size or 0 for upload in files) > settings.FUNDUS_UPLOAD_INLINE_MAX_BYTES
    )


def upload_stage(
    *, files: Sequence[UploadedFileLike], visit: UploadVisit, uploaded_by: User | None
) -> Job:
    """Store the uploaded files as they are (no decoding) in a staging folder of their own and
    queue the import job. Raises QueueUnavailable (after removing the folder) when Redis is down:
    the user is told at once and nothing is half-imported."""
    from grading.services.jobs import QueueUnavailable, job_enqueue

    folder = Path(settings.FUNDUS_UPLOAD_STAGING_DIR) / uuid.uuid4().hex
    folder.mkdir(parents=True)
    names = []
    try:
        for index, upload in enumerate(files):
            upload.seek(0)
            target = folder / f"{index:05d}"
            with open(target, "wb") as handle:
                shutil.copyfileobj(upload, handle, 1024 * 1024)
            names.append(upload.name or "file")
        # Remote storage: the import job may run on another machine; it fetches them back.
        storage.folder_upload(folder=folder, prefix=_staging_prefix(folder))
        job, _ = job_enqueue(
            kind=Job.Kind.IMAGES_IMPORT,
            params={
                "folder": str(folder),
                "names": names,
                "patient_id": visit.patient_pseudonym,
                "eye": visit.eye,
                "acquired_on": visit.acquired_on.isoformat() if visit.acquired_on else None,
            },
            created_by=uploaded_by,
        )
    except (QueueUnavailable, OSError):
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return job


def _staging_prefix(folder: Path) -> str:
    return f"staging/{folder.name}"


@dataclass(frozen=True)
class _StagedFile:
    name: str  # the name the user's file had
    path: Path


def _staged_files_open(staged: list[_StagedFile]) -> Iterator[File]:
    """Each staged file, open only while it is being read, like the uploaded file it was."""
    for item in staged:
        with item.path.open("rb") as handle:
            yield File(handle, name=item.name)


def upload_staged_import_job(*, job: Job, progress: Callable[[int, str], None]) -> dict:
    """The ``images_import`` task's work: import the staged files of one upload, reporting
    progress, then remove the staging folder. A retry after a crash imports the rest; photographs
    stored by the first run are reported as duplicates of themselves."""
    params = job.params
    folder = Path(params["folder"])
    visit = UploadVisit(
        patient_pseudonym=params["patient_id"],
        eye=params["eye"],
        acquired_on=dt.date.fromisoformat(params["acquired_on"]) if params["acquired_on"] else None,
    )
    staged = [
        _StagedFile(name=name, path=folder / f"{index:05d}")
        for index, name in enumerate(params["names"])
    ]
    storage.folder_download(prefix=_staging_prefix(folder), folder=folder)
    missing = [item.name for item in staged if not item.path.is_file()]
    if missing:
        raise FileNotFoundError(f"staged files are missing: {', '.join(missing[:5])}")
    progress(1, f"Checking {len(staged)} files")
    report = upload_files_process(
        files=_staged_files_open(staged),
        visit=visit,
        uploaded_by=job.created_by,
        progress=progress,
        total=len(staged),
    )
    shutil.rmtree(folder, ignore_errors=True)
    storage.prefix_delete(_staging_prefix(folder))
    return {
        "outcomes": [
            {
                "name": o.name,
                "status": o.status,
                "message": o.message,
                "image_id": o.image_id,
            }
            for o in report.outcomes
        ],
        "accepted": report.accepted,
        "duplicates": report.duplicates,
        "rejected": report.rejected,
        "prediction_queued": report.prediction_queued,
        "message": (
            f"{report.accepted} stored, {report.duplicates} duplicate(s), "
            f"{report.rejected} rejected"
        ),
    }


def uploads_leftovers_remove(*, older_than_seconds: float | None = None) -> int:
    """Remove what an interrupted upload left behind: the temporary files of a web process killed
    while receiving a request, and staging folders that no import job will read (the request
    died before queueing its job, or the job finished). Folders of failed jobs stay, so the job
    can be retried. Returns how many entries were removed."""
    age = (
        settings.FUNDUS_UPLOAD_LEFTOVER_SECONDS
        if older_than_seconds is None
        else older_than_seconds
    )
    cutoff = time.time() - age
    removed = 0
    temp_dir = Path(settings.FILE_UPLOAD_TEMP_DIR)
    for path in temp_dir.glob("*.upload*") if temp_dir.is_dir() else []:
        if path.is_file() and path.stat().st_mtime <= cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    staging = Path(settings.FUNDUS_UPLOAD_STAGING_DIR)
    if staging.is_dir():
        kept = {
            params.get("folder")
            for params in Job.objects.filter(
                kind=Job.Kind.IMAGES_IMPORT,
                state__in=[Job.State.QUEUED, Job.State.RUNNING, Job.State.FAILED],
            ).values_list("params", flat=True)
        }
        for folder in staging.iterdir():
            if str(folder) not in kept and folder.stat().st_mtime <= cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
    return removed


def predictions_enqueue_quietly(image_ids: list[int]) -> bool:
    from grading.services.predictions import images_predict_enqueue

    # Documented never to raise (False when Redis is down or no version is active); the upload
    # itself has succeeded either way, so a surprise here must not turn into a 500.
    try:
        return bool(images_predict_enqueue(image_ids=image_ids))
    except Exception:
        logger.exception("queueing predictions for uploads failed")
        return False
