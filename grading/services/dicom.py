"""DICOM Ophthalmic Photography in: one OP instance read into a storable photograph and its visit.

Every way a DICOM file arrives (browser upload, ``manage.py import_images``, the background import
of a large upload, and the C-STORE listener) calls ``dicom_photograph_read``, then stores the
photograph with ``image_create`` like any JPEG. What is taken from the header:

- PatientID -> the patient, as a keyed hash (HMAC-SHA256 with ``FUNDUS_PSEUDONYM_KEY``) unless
  ``FUNDUS_DICOM_KEEP_IDENTIFIERS`` keeps it as it is;
- AcquisitionDateTime, else StudyDate -> the visit's date;
- ImageLaterality, else Laterality -> the eye;
- StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID -> kept on the image (one image per SOP
  instance);
- PatientName and PatientBirthDate only when ``FUNDUS_DICOM_KEEP_DEMOGRAPHICS`` says so.

Nothing else of the header is stored. A JPEG baseline photograph is stored as the camera's own JPEG
bytes (no second lossy compression); other transfer syntaxes are decoded and stored as PNG.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import warnings
from dataclasses import dataclass

import numpy as np
import PIL.Image
import pydicom
import pydicom.encaps
import pydicom.pixels
from django.conf import settings
from django.db import transaction
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, JPEGBaseline8Bit

from grading.models import Image, Patient

OP_SOP_CLASS = UID("1.2.840.10008.5.1.4.1.1.77.1.5.1")  # Ophthalmic Photography 8 Bit Image
DICOM_SUFFIXES = {".dcm", ".dicom"}
PSEUDONYM_PREFIX = "dcm-"
_LATERALITY = {"L": Image.Eye.LEFT, "R": Image.Eye.RIGHT}


class DicomRejected(ValueError):
    """Not an importable DICOM photograph; the message (starting with the file's name) says why."""


# grading.services.images validates the photograph's bytes like any upload's and turns a
# DicomRejected into its ImageRejected; this module never imports it (images imports this one).


@dataclass(frozen=True)
class DicomUids:
    """The DICOM instance a photograph came from (empty for a JPEG or PNG)."""

    study_instance_uid: str = ""
    series_instance_uid: str = ""
    sop_instance_uid: str = ""


@dataclass(frozen=True)
class DicomPhotograph:
    """An OP instance, checked and converted; identifiers already pseudonymised (or kept).
    ``data``: the photograph as JPEG (the camera's own) or PNG bytes."""

    data: bytes
    patient_pseudonym: str  # "" when the header has no PatientID
    eye: str
    acquired_on: dt.date | None
    uids: DicomUids
    patient_name: str = ""  # only with FUNDUS_DICOM_KEEP_DEMOGRAPHICS
    birth_date: dt.date | None = None  # only with FUNDUS_DICOM_KEEP_DEMOGRAPHICS


def dicom_looks_like(*, data: bytes, name: str = "") -> bool:
    """A DICOM Part 10 file (128-byte preamble then ``DICM``), or a file named like one."""
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    return data[128:132] == b"DICM" or suffix in DICOM_SUFFIXES


def pseudonym_key() -> bytes:
    """``FUNDUS_PSEUDONYM_KEY``; without it, a key derived from ``SECRET_KEY`` (so changing
    SECRET_KEY would change every new pseudonym: set the key explicitly in production)."""
    if settings.FUNDUS_PSEUDONYM_KEY:
        return settings.FUNDUS_PSEUDONYM_KEY.encode()
    return hmac.new(settings.SECRET_KEY.encode(), b"funduscope-pseudonym", hashlib.sha256).digest()


def patient_pseudonym_for(*, patient_id: str) -> str:
    """The patient's pseudonym for a DICOM PatientID: a keyed hash, unless identifiers are kept."""
    patient_id = patient_id.strip()
    if not patient_id:
        return ""
    if settings.FUNDUS_DICOM_KEEP_IDENTIFIERS:
        return patient_id[:64]
    digest = hmac.new(pseudonym_key(), patient_id.encode(), hashlib.sha256).hexdigest()
    return f"{PSEUDONYM_PREFIX}{digest[:24]}"


def _dicom_date(value: object) -> dt.date | None:
    text = str(value or "").strip()[:8]
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date() if len(text) == 8 else None
    except ValueError:
        return None


def _dataset_read(data: bytes, name: str) -> Dataset:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OSError) as error:
        detail = "" if isinstance(error, InvalidDicomError) else f" ({error})"
        raise DicomRejected(
            f"{name}: this is not a DICOM file{detail}; expected a DICOM Part 10 file "
            "(a 128-byte preamble followed by DICM)."
        ) from None
    # pydicom reads what it can of a cut-off file and warns; a partial photograph is no photograph.
    ended = [w for w in caught if "end of file" in str(w.message).lower()]
    lost = "SOPClassUID" not in dataset and "MediaStorageSOPClassUID" in dataset.file_meta
    if ended or lost:
        raise DicomRejected(f"{name}: the DICOM file is damaged or truncated (it ends too early).")
    return dataset


def _kind_check(dataset: Dataset, name: str) -> None:
    sop_class = UID(str(dataset.get("SOPClassUID", "")))
    if sop_class != OP_SOP_CLASS:
        what = sop_class.name if sop_class else "an object without a SOP class"
        modality = dataset.get("Modality", "")
        raise DicomRejected(
            f"{name}: this DICOM object is {what}"
            + (f" (modality {modality})" if modality else "")
            + ", not an ophthalmic photograph; only Ophthalmic Photography (OP) images are "
            "imported."
        )
    if "PixelData" not in dataset:
        raise DicomRejected(f"{name}: this DICOM photograph has no pixel data.")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DicomRejected(
            f"{name}: this DICOM object holds {frames} frames (a multi-frame image); only "
            "single-frame photographs are imported. Export each photograph as its own instance."
        )


def _eye_of(dataset: Dataset, name: str) -> str:
    value = str(dataset.get("ImageLaterality", "") or dataset.get("Laterality", "")).strip()
    if value.upper() in _LATERALITY:
        return _LATERALITY[value.upper()]
    if value.upper() == "B":
        raise DicomRejected(
            f"{name}: the photograph is marked as showing both eyes (laterality B)."
        )
    raise DicomRejected(
        f"{name}: the DICOM header gives no laterality (ImageLaterality or Laterality), so the "
        "eye is unknown; set the eye on the camera and send it again."
    )


def _photograph_bytes(dataset: Dataset, name: str) -> bytes:
    syntax = UID(str(dataset.file_meta.get("TransferSyntaxUID", "")))
    rows, columns = int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0))
    if rows * columns > settings.FUNDUS_MAX_IMAGE_PIXELS:
        raise DicomRejected(
            f"{name}: {columns}x{rows} pixels is more than the limit of "
            f"{settings.FUNDUS_MAX_IMAGE_PIXELS:,} pixels."
        )
    if syntax == JPEGBaseline8Bit:
        # The camera's own JPEG, stored as it is: decoding and re-encoding would lose quality.
        try:
            return next(pydicom.encaps.generate_frames(dataset.PixelData, number_of_frames=1))
        except (ValueError, KeyError, TypeError, StopIteration) as error:
            raise DicomRejected(f"{name}: the JPEG pixel data cannot be read ({error}).") from None
    try:
        decoder = pydicom.pixels.get_decoder(syntax)
    except NotImplementedError:
        raise DicomRejected(
            f"{name}: pixel data in the transfer syntax {syntax.name or syntax} ({syntax}) cannot "
            "be decoded: no decoder exists for it here. Send JPEG baseline, JPEG 2000 or "
            "uncompressed photographs."
        ) from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise DicomRejected(
            f"{name}: pixel data in the transfer syntax {syntax.name} ({syntax}) needs a decoder "
            f"that is not installed ({missing})."
        )
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # pydicom and its plugins raise many kinds on corrupt data
        raise DicomRejected(
            f"{name}: the DICOM pixel data could not be decoded ({error})."
        ) from None
    return _png_bytes(pixels, name)


def _png_bytes(pixels: np.ndarray, name: str) -> bytes:
    if pixels.dtype != np.uint8:
        raise DicomRejected(f"{name}: only 8-bit photographs are imported (got {pixels.dtype}).")
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise DicomRejected(f"{name}: unexpected pixel layout {pixels.shape}.")
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def dicom_photograph_read(*, data: bytes, name: str = "file") -> DicomPhotograph:
    """Read and check one DICOM OP instance; raise DicomRejected with a message for the user."""
    dataset = _dataset_read(data, name)
    _kind_check(dataset, name)
    eye = _eye_of(dataset, name)
    data = _photograph_bytes(dataset, name)
    keep = settings.FUNDUS_DICOM_KEEP_DEMOGRAPHICS
    return DicomPhotograph(
        data=data,
        patient_pseudonym=patient_pseudonym_for(patient_id=str(dataset.get("PatientID", ""))),
        eye=eye,
        acquired_on=_dicom_date(dataset.get("AcquisitionDateTime"))
        or _dicom_date(dataset.get("StudyDate")),
        uids=DicomUids(
            study_instance_uid=str(dataset.get("StudyInstanceUID", ""))[:64],
            series_instance_uid=str(dataset.get("SeriesInstanceUID", ""))[:64],
            sop_instance_uid=str(dataset.get("SOPInstanceUID", ""))[:64],
        ),
        patient_name=str(dataset.get("PatientName", ""))[:255] if keep else "",
        birth_date=_dicom_date(dataset.get("PatientBirthDate")) if keep else None,
    )


def dicom_patient_get(*, photograph: DicomPhotograph, fallback_pseudonym: str) -> Patient:
    """The photograph's patient (created at its first photograph), or the fallback's when the
    header names none."""
    pseudonym = photograph.patient_pseudonym or fallback_pseudonym
    with transaction.atomic():
        patient, _ = Patient.objects.get_or_create(
            pseudonym=pseudonym,
            defaults={"name": photograph.patient_name, "birth_date": photograph.birth_date},
        )
    return patient


def image_for_sop_instance(*, sop_instance_uid: str) -> Image | None:
    """The image already stored for this SOP instance, if any."""
    if not sop_instance_uid:
        return None
    return Image.objects.filter(sop_instance_uid=sop_instance_uid).select_related("patient").first()
