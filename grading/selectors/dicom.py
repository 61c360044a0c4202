"""What DICOM import keeps, for the settings page (the choice is the environment's)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

KEPT_FROM_HEADER = (
    "PatientID (as the patient's pseudonym)",
    "AcquisitionDateTime or StudyDate (the visit's date)",
    "ImageLaterality or Laterality (the eye)",
    "StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID",
)


@dataclass(frozen=True)
class DicomImportPolicy:
    keeps_identifiers: bool
    keeps_demographics: bool
    key_source: str
    kept: tuple[str, ...]
    ae_title: str
    port: int
    allowed_aes: tuple[str, ...]


def dicom_import_policy() -> DicomImportPolicy:
    return DicomImportPolicy(
        keeps_identifiers=settings.FUNDUS_DICOM_KEEP_IDENTIFIERS,
        keeps_demographics=settings.FUNDUS_DICOM_KEEP_DEMOGRAPHICS,
        key_source=(
            "FUNDUS_PSEUDONYM_KEY"
            if settings.FUNDUS_PSEUDONYM_KEY
            else "key derived from SECRET_KEY; set FUNDUS_PSEUDONYM_KEY"
        ),
        kept=KEPT_FROM_HEADER
        + (("PatientName, PatientBirthDate",) if settings.FUNDUS_DICOM_KEEP_DEMOGRAPHICS else ()),
        ae_title=settings.FUNDUS_DICOM_AE_TITLE,
        port=settings.FUNDUS_DICOM_PORT,
        allowed_aes=tuple(settings.FUNDUS_DICOM_ALLOWED_AES),
    )
