"""Synthetic DICOM Ophthalmic Photography instances, built from a JPEG photograph, for the tests,
the benchmark (``bench/dicom.py``) and trying the listener. Every identifier is synthetic: a made-up
PatientID, fresh UIDs; never a real patient's.

The three transfer syntaxes a fundus camera sends: JPEG baseline (the JPEG's own bytes,
encapsulated), JPEG 2000 lossless and uncompressed (explicit VR little endian).
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
import PIL.Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    generate_uid,
)

from grading.services.dicom import OP_SOP_CLASS

Syntax = Literal["jpeg", "j2k", "raw"]
SYNTAXES: dict[Syntax, UID] = {
    "jpeg": JPEGBaseline8Bit,
    "j2k": JPEG2000Lossless,
    "raw": ExplicitVRLittleEndian,
}
CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
BASIC_TEXT_SR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.88.11")


def op_dataset(
    *,
    jpeg: bytes,
    syntax: Syntax = "jpeg",
    patient_id: str = "SYN-0001",
    laterality: str = "R",
    study_date: str = "20240305",
    study_uid: str | None = None,
    sop_uid: str | None = None,
    patient_name: str = "Synthetic^Patient",
    birth_date: str = "19600101",
) -> Dataset:
    """One OP instance of the photograph ``jpeg`` (a JPEG file's bytes)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = OP_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = UID(sop_uid or generate_uid())
    meta.TransferSyntaxUID = SYNTAXES[syntax]
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = OP_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OP"
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = birth_date
    ds.StudyDate = study_date
    if laterality:
        ds.ImageLaterality = laterality
    with PIL.Image.open(io.BytesIO(jpeg)) as image:
        pixels = np.asarray(image.convert("RGB"))
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PlanarConfiguration = 0
    if syntax == "jpeg":
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PixelData = encapsulate([jpeg])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    else:
        ds.PhotometricInterpretation = "RGB"
        ds.PixelData = pixels.tobytes()
        if syntax == "j2k":
            ds.compress(JPEG2000Lossless, pixels)
    return ds


def dataset_bytes(dataset: Dataset) -> bytes:
    """The dataset as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def op_instance_bytes(*, jpeg: bytes, syntax: Syntax = "jpeg", **fields: str) -> bytes:
    """``op_dataset`` as a DICOM Part 10 file."""
    return dataset_bytes(op_dataset(jpeg=jpeg, syntax=syntax, **fields))
