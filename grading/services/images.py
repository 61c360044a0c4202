"""Writes for images: validation, content-addressed storage, upload and bulk import.

Slow work (reading and decoding the file) happens before the database transaction; each image and its
grade are then written in one transaction, so an import interrupted at any point leaves whole images
only, and re-running it skips what is already there.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import os
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import PIL.Image
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from grading.models import Grade, GradeLevel, Image, Patient
from grading.services.dicom import (
    DicomPhotograph,
    DicomRejected,
    DicomUids,
    dicom_looks_like,
    dicom_photograph_read,
)
from grading.services.quality import quality_measures_or_none
from mlcore.data.near_duplicates import perceptual_hash_of_bytes
from mlcore.data.pipelining import map_ahead
from mlcore.data.quality import QualityMeasures

ACCEPTED_FORMATS = {"JPEG": "jpg", "PNG": "png"}
IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".png",
    ".tif",
    ".tiff",
    ".bmp",
    ".gif",
    ".webp",
    ".dcm",
    ".dicom",
}
EYE_ALIASES = {
    "l": Image.Eye.LEFT, "left": Image.Eye.LEFT, "os": Image.Eye.LEFT,
    "r": Image.Eye.RIGHT, "right": Image.Eye.RIGHT, "od": Image.Eye.RIGHT,
    "u": Image.Eye.UNKNOWN, "unknown": Image.Eye.UNKNOWN, "": Image.Eye.UNKNOWN,
}  # fmt: skip


class ImageRejected(ValueError):
    """The file is not an image we can store; the message says why, for the user."""


class DuplicateImage(ValueError):
    def __init__(self, existing: Image):
        super().__init__(f"This photograph is already stored (image #{existing.pk}).")
        self.existing = existing


@dataclass(frozen=True)
class ValidatedImage:
    data: bytes
    sha256: str
    width: int
    height: int
    extension: str
    # Near-duplicate detection (mlcore.data.near_duplicates); computed here, in the import's
    # reading threads, rather than inside the write.
    perceptual_hash: str = ""


def image_validate(*, data: bytes, name: str = "file") -> ValidatedImage:
    """Decode the bytes fully: the file must really be a JPEG or PNG, within size and pixel limits."""
    if not data:
        raise ImageRejected(f"{name}: the file is empty.")
    if len(data) > settings.FUNDUS_MAX_UPLOAD_BYTES:
        limit_mb = settings.FUNDUS_MAX_UPLOAD_BYTES / 1024 / 1024
        raise ImageRejected(f"{name}: the file is larger than {limit_mb:.0f} MB.")
    try:
        with PIL.Image.open(io.BytesIO(data)) as probe:
            image_format = probe.format
            width, height = probe.size
    except PIL.Image.DecompressionBombError:
        raise ImageRejected(f"{name}: the image has too many pixels to be a photograph.") from None
    except (PIL.UnidentifiedImageError, OSError, ValueError):
        raise ImageRejected(
            f"{name}: this is not an image file (it could not be decoded)."
        ) from None
    if image_format not in ACCEPTED_FORMATS:
        raise ImageRejected(f"{name}: {image_format} images are not accepted; use JPEG or PNG.")
    # Check the header's pixel count before decoding, so a small file that expands to gigabytes
    # (a decompression bomb) is refused without allocating its pixels.
    if width * height > settings.FUNDUS_MAX_IMAGE_PIXELS:
        raise ImageRejected(
            f"{name}: {width}x{height} pixels is more than the limit of "
            f"{settings.FUNDUS_MAX_IMAGE_PIXELS:,} pixels."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(io.BytesIO(data)) as decoded:
                decoded.load()  # a truncated or corrupt file fails here, not later in a worker
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombWarning) as error:
        raise ImageRejected(f"{name}: the image is damaged or truncated ({error}).") from None
    return ValidatedImage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
        extension=ACCEPTED_FORMATS[image_format],
        perceptual_hash=_perceptual_hash_or_blank(data),
    )


def image_read(*, data: bytes, name: str = "file") -> tuple[ValidatedImage, DicomPhotograph | None]:
    """A JPEG or PNG file, or a DICOM Ophthalmic Photography instance (its photograph, validated
    like any upload, and what its header says about the patient, visit and eye)."""
    if not dicom_looks_like(data=data, name=name):
        return image_validate(data=data, name=name), None
    if len(data) > settings.FUNDUS_MAX_UPLOAD_BYTES:
        limit_mb = settings.FUNDUS_MAX_UPLOAD_BYTES / 1024 / 1024
        raise ImageRejected(f"{name}: the file is larger than {limit_mb:.0f} MB.")
    try:
        photograph = dicom_photograph_read(data=data, name=name)
    except DicomRejected as error:
        raise ImageRejected(str(error)) from None
    return image_validate(data=photograph.data, name=name), photograph


def _perceptual_hash_or_blank(data: bytes) -> str:
    """The photograph's perceptual hash; blank (its own group) for a pixel format the hash
    cannot read, rather than refusing a photograph that decodes."""
    try:
        return perceptual_hash_of_bytes(data)
    except (OSError, ValueError):
        return ""


def image_size_check(*, validated: ValidatedImage, name: str = "file") -> None:
    """Refuse a photograph too small to grade (a thumbnail, an icon, a 1x1 tracking pixel)."""
    minimum = settings.FUNDUS_MIN_IMAGE_SIDE
    if min(validated.width, validated.height) < minimum:
        raise ImageRejected(
            f"{name}: {validated.width}x{validated.height} pixels is too small to grade; "
            f"a photograph needs at least {minimum} pixels on its short side."
        )


def _storage_name(validated: ValidatedImage) -> str:
    return f"images/{validated.sha256[:2]}/{validated.sha256}.{validated.extension}"


def _file_store(validated: ValidatedImage) -> tuple[str, bool]:
    """Write the bytes under their content hash. Returns the name and whether this call wrote it."""
    name = _storage_name(validated)
    if default_storage.exists(name):
        return name, False
    saved = default_storage.save(name, ContentFile(validated.data))
    return saved, True


def _image_existing(sha256: str, sop_instance_uid: str) -> Image | None:
    existing = Image.objects.filter(sha256=sha256).first()
    if existing is None and sop_instance_uid:
        existing = Image.objects.filter(sop_instance_uid=sop_instance_uid).first()
    return existing


def _import_grade_confirm(image: Image, grade: GradeLevel, source: str) -> None:
    """An imported photograph arrives graded: its grade row and its confirmation (inside the
    caller's transaction)."""
    Grade.objects.create(image=image, kind=Grade.Kind.IMPORT, source=source, grade=grade)
    Image.objects.filter(pk=image.pk).update(
        grading_state=Image.GradingState.CONFIRMED,
        confirmed_grade=grade,
        confirmation_method=Image.ConfirmationMethod.IMPORT,
        confirmed_at=timezone.now(),
    )
    image.refresh_from_db()


def image_create(
    *,
    validated: ValidatedImage,
    patient: Patient,
    eye: str = Image.Eye.UNKNOWN,
    acquired_on: dt.date | None = None,
    uploaded_by: User | None = None,
    source: str = "",
    original_filename: str = "",
    confirmed_grade: GradeLevel | None = None,
    import_source: str = "",
    quality_measures: QualityMeasures | None = None,
    dicom_uids: DicomUids | None = None,
) -> Image:
    """Store one validated photograph (and, for imports, its confirmed grade) or raise
    DuplicateImage. ``quality_measures``: the photograph's, when the caller measured it already;
    ``dicom_uids``: the DICOM instance it came from (one image per SOP instance)."""
    uids = dicom_uids or DicomUids()
    existing = _image_existing(validated.sha256, uids.sop_instance_uid)
    if existing is not None:
        raise DuplicateImage(existing)
    from grading.services.quality import quality_fields_for

    # Measured here so upload, the import command and background imports all get the gate.
    # An imported photo with a confirmed grade is measured but never sent to the check queue.
    quality = quality_fields_for(data=validated.data, measures=quality_measures)
    if confirmed_grade is not None and quality:
        quality["quality_review"] = Image.QualityReview.NONE
    name, wrote_file = _file_store(validated)
    try:
        with transaction.atomic():
            image = Image(
                patient=patient,
                eye=eye,
                acquired_on=acquired_on,
                sha256=validated.sha256,
                perceptual_hash=validated.perceptual_hash,
                width=validated.width,
                height=validated.height,
                source=source[:255],
                original_filename=original_filename[:255],
                uploaded_by=uploaded_by,
                **asdict(uids),
                **quality,
            )
            image.file.name = name
            image.full_clean(exclude=["file"])
            image.save()
            if confirmed_grade is not None:
                _import_grade_confirm(image, confirmed_grade, import_source or source or "import")
    except IntegrityError:
        # A concurrent upload of the same photo won the race; report it as the duplicate it is.
        if wrote_file:
            default_storage.delete(name)
        existing = _image_existing(validated.sha256, uids.sop_instance_uid)
        if existing is not None:
            raise DuplicateImage(existing) from None
        raise
    except Exception:
        if wrote_file:
            default_storage.delete(name)
        raise
    if confirmed_grade is None:
        # It is going to be graded: render the viewer's views now, in the background, rather
        # than make the clinician wait seconds for each on a raw camera photograph.
        from grading.services.renderings import image_views_render_enqueue

        image_views_render_enqueue(image_id=image.pk)
    return image


# ---------------------------------------------------------------------------------------------
# Bulk import


@dataclass
class ImportItem:
    """One file to import; ``grade_label`` None imports it ungraded (a pending image)."""

    path: Path
    grade_label: str | None
    patient_id: str = ""
    eye: str = ""
    date: str = ""


@dataclass
class ImportSummary:
    imported: int = 0
    duplicates: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    per_grade: dict[int, int] = field(default_factory=dict)
    ungraded: int = 0
    imported_ids: list[int] = field(default_factory=list)

    @property
    def seen(self) -> int:
        return self.imported + self.duplicates + len(self.rejected)


class ImportRejected(ValueError):
    """The import as a whole cannot run (unknown grade folder, malformed CSV); nothing was written."""


def grade_level_lookup() -> Callable[[str], GradeLevel | None]:
    """Map a folder name or CSV value to a grade: by value ("2") or by name ("Moderate NPDR")."""
    levels = list(GradeLevel.objects.all())
    by_key = {str(level.value): level for level in levels}
    by_key.update({level.name.strip().lower(): level for level in levels})
    return lambda label: by_key.get(label.strip().lower())


def import_items_from_folders(root: Path) -> list[ImportItem]:
    """The original recipe's layout: ``root/<grade>/*.jpg``, the folder name being the grade."""
    lookup = grade_level_lookup()
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ImportRejected(f"{root} has no grade folders (expected {root}/<grade>/<image>).")
    unknown = [folder.name for folder in folders if lookup(folder.name) is None]
    if unknown:
        known = ", ".join(str(level.value) for level in GradeLevel.objects.all())
        raise ImportRejected(
            f"Folder(s) {', '.join(repr(name) for name in unknown)} in {root} do not name a grade "
            f"of the scale ({known}); rename them or change FUNDUS_GRADE_SCALE."
        )
    items = []
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                items.append(ImportItem(path=path, grade_label=folder.name))
    return items


def import_items_ungraded_from_folder(root: Path) -> tuple[list[ImportItem], int]:
    """Every photograph under ``root`` (any depth), to import as pending images; returns the
    items and how many other files (not named like an image) were left alone."""
    items, others = [], 0
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            items.append(ImportItem(path=path, grade_label=None))
        else:
            others += 1
    if not items:
        raise ImportRejected(
            f"{root} holds no photographs (files ending in {', '.join(sorted(IMAGE_SUFFIXES))})."
        )
    return items, others


def import_items_from_csv(labels: Path, root: Path, *, ungraded: bool = False) -> list[ImportItem]:
    """``filename,grade[,patient_id,eye,date]``; with ``ungraded`` the grade column must be absent
    (``filename[,patient_id,eye,date]``) so no grade is ever dropped silently."""
    with labels.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        if ungraded and "grade" in columns:
            raise ImportRejected(
                f"{labels} has a grade column, but --ungraded imports photographs without grades. "
                "Drop --ungraded to import the grades, or remove the column."
            )
        required = {"filename"} if ungraded else {"filename", "grade"}
        if not required <= columns:
            hint = "" if ungraded else " (or use --ungraded for photographs without grades)"
            raise ImportRejected(
                f"{labels} must have at least the columns {','.join(sorted(required))}{hint} "
                f"(found: {sorted(columns)})."
            )
        rows = list(reader)
    if ungraded:
        return [
            ImportItem(
                path=root / row["filename"],
                grade_label=None,
                patient_id=(row.get("patient_id") or "").strip(),
                eye=(row.get("eye") or "").strip(),
                date=(row.get("date") or "").strip(),
            )
            for row in rows
        ]
    lookup = grade_level_lookup()
    unknown = sorted({row["grade"] for row in rows if lookup(row["grade"] or "") is None})
    if unknown:
        raise ImportRejected(f"{labels}: grade value(s) {unknown} are not in the grading scale.")
    return [
        ImportItem(
            path=root / row["filename"],
            grade_label=row["grade"],
            patient_id=(row.get("patient_id") or "").strip(),
            eye=(row.get("eye") or "").strip(),
            date=(row.get("date") or "").strip(),
        )
        for row in rows
    ]


def import_items_grouped(items: list[ImportItem], groups_file: Path) -> list[ImportItem]:
    """Photographs listed together in a near-duplicate groups file (one group of ids per line,
    ``#`` comments; an id is a file's stem or the last ``_``-separated part of it, as in the
    shared set's ``near_duplicate_groups.txt``) become one patient, so every training split
    keeps them on one side; a patient_id given in the labels CSV wins."""
    from dataclasses import replace

    from mlcore.data.splits import read_near_duplicate_groups

    try:
        groups = read_near_duplicate_groups(groups_file)
    except (OSError, UnicodeDecodeError) as error:
        raise ImportRejected(f"{groups_file}: cannot read the groups file ({error}).") from None
    owner = {member: f"group-{min(members)}" for members in groups for member in members}
    grouped = []
    for item in items:
        stem = item.path.stem
        key = stem if stem in owner else stem.rsplit("_", 1)[-1]
        if key in owner and not item.patient_id:
            item = replace(item, patient_id=owner[key])
        grouped.append(item)
    return grouped


def _parse_eye(value: str, path: Path) -> str:
    try:
        return EYE_ALIASES[value.strip().lower()]
    except KeyError:
        raise ImageRejected(f"{path}: eye {value!r} is not left/right/unknown.") from None


def _parse_date(value: str, path: Path) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ImageRejected(f"{path}: date {value!r} is not YYYY-MM-DD.") from None


# Reading, checking and measuring a photograph take most of an import's time and touch no
# database: threads do them for the next photographs while the loop stores this one (numpy and
# Pillow release the GIL).
IMPORT_PREPARE_THREADS = max(2, os.cpu_count() or 1)


@dataclass
class _Prepared:
    """An import item's file, read, checked and measured (or why it was refused)."""

    validated: ValidatedImage | None = None
    measures: QualityMeasures | None = None
    rejected: ImageRejected | None = None
    dicom: DicomPhotograph | None = None


def _import_prepare(path: Path, known_sha: set[str]) -> _Prepared:
    try:
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ImageRejected(f"{path}: cannot be read ({error.strerror}).") from None
        validated, dicom = image_read(data=data, name=str(path))
    except ImageRejected as error:
        return _Prepared(rejected=error)
    if validated.sha256 in known_sha:  # a duplicate is skipped: no need to measure it
        return _Prepared(validated=validated, dicom=dicom)
    measures = quality_measures_or_none(data=validated.data)
    return _Prepared(validated=validated, measures=measures, dicom=dicom)


def images_import(
    *,
    items: Iterable[ImportItem],
    source: str,
    progress: Callable[[ImportItem], None] | None = None,
) -> ImportSummary:
    """Import photographs with their grades as confirmed grades from the named import source;
    items without a grade become pending images, waiting in the worklist."""
    lookup = grade_level_lookup()
    summary = ImportSummary()
    known_sha = set(Image.objects.values_list("sha256", flat=True))
    with ThreadPoolExecutor(IMPORT_PREPARE_THREADS, thread_name_prefix="import") as pool:
        prepared_items = map_ahead(
            pool,
            lambda item: _import_prepare(item.path, known_sha),
            items,
            ahead=2 * IMPORT_PREPARE_THREADS,
        )
        for item, prepared in prepared_items:
            try:
                _import_one(
                    item,
                    prepared,
                    source=source,
                    lookup=lookup,
                    known_sha=known_sha,
                    summary=summary,
                )
            except DuplicateImage:
                summary.duplicates += 1
            except ImageRejected as error:
                summary.rejected.append((str(item.path), str(error)))
            finally:
                if progress is not None:
                    progress(item)
    return summary


def _import_one(
    item: ImportItem,
    prepared: _Prepared,
    *,
    source: str,
    lookup: Callable[[str], GradeLevel | None],
    known_sha: set[str],
    summary: ImportSummary,
) -> None:
    level = lookup(item.grade_label) if item.grade_label is not None else None
    if level is None and item.grade_label is not None:
        raise ImageRejected(f"{item.path}: grade {item.grade_label!r} is not in the scale.")
    eye = _parse_eye(item.eye, item.path)
    acquired_on = _parse_date(item.date, item.path)
    validated, dicom = prepared.validated, prepared.dicom
    if prepared.rejected is not None or validated is None:
        # _import_prepare sets exactly one of the two.
        raise prepared.rejected or ImageRejected(f"{item.path}: the file was not read.")
    if validated.sha256 in known_sha:
        summary.duplicates += 1
        return
    pseudonym = item.patient_id or f"img-{validated.sha256[:16]}"
    if dicom is not None:  # the header's facts, where the CSV leaves them out
        pseudonym = item.patient_id or dicom.patient_pseudonym or pseudonym
        eye = eye if item.eye else dicom.eye
        acquired_on = acquired_on or dicom.acquired_on
    with transaction.atomic():
        patient, _ = Patient.objects.get_or_create(
            pseudonym=pseudonym,
            defaults={"name": dicom.patient_name, "birth_date": dicom.birth_date} if dicom else {},
        )
        image = image_create(
            validated=validated,
            patient=patient,
            eye=eye,
            acquired_on=acquired_on,
            dicom_uids=dicom.uids if dicom else None,
            source=source,
            original_filename=item.path.name,
            confirmed_grade=level,
            import_source=source,
            quality_measures=prepared.measures,
        )
    known_sha.add(validated.sha256)
    summary.imported += 1
    summary.imported_ids.append(image.pk)
    if level is None:
        summary.ungraded += 1
    else:
        summary.per_grade[level.value] = summary.per_grade.get(level.value, 0) + 1
