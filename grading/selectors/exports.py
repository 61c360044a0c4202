"""Rows for the CSV exports: one row per grade and one row per prediction.

Rows are produced lazily from ``values_list(...).iterator(chunk_size=...)``: the database hands them
over in chunks (a server-side cursor on PostgreSQL), so an export of 100,000 rows never holds more than
one chunk of plain tuples in memory, and no model instances are built.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

from django.db.models import QuerySet

from grading.models import Grade, ModelVersion, Prediction
from grading.selectors.grading_scale import scale_get
from mlcore.data.rubric import QUADRANTS, Findings

EXPORT_CHUNK_SIZE = 2000
# Spreadsheet programs run a cell starting with one of these as a formula ("CSV injection"); free
# text typed by users (notes, names) is therefore prefixed with an apostrophe when it starts so.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# Each export column as (CSV header, the ORM lookup that fills it), so the two never drift apart.
Column = tuple[str, str]

# The photograph a row is about, the same in both exports.
_IMAGE_COLUMNS: tuple[Column, ...] = (
    ("image_id", "image_id"),
    ("image_sha256", "image__sha256"),
    ("patient", "image__patient__pseudonym"),
    ("eye", "image__eye"),
    ("acquired_on", "image__acquired_on"),
    # The DICOM instance the photograph came from (empty for a JPEG or PNG upload).
    ("study_instance_uid", "image__study_instance_uid"),
    ("sop_instance_uid", "image__sop_instance_uid"),
)

_GRADE_EXPORT: tuple[Column, ...] = (
    ("grade_id", "id"),
    ("created_at", "created_at"),
    *_IMAGE_COLUMNS,
    ("kind", "kind"),
    ("grader", "grader__username"),
    ("source", "source"),
    ("grade", "grade_id"),
    ("ungradable", "ungradable"),
    ("macular_oedema", "macular_oedema"),
    ("notes", "notes"),
    ("supersedes_grade_id", "supersedes_id"),
    ("superseded_by_grade_id", "superseded_by__id"),
    ("image_confirmed_grade", "image__confirmed_grade_id"),
    ("image_confirmation_method", "image__confirmation_method"),
    # The lesion rubric: whether it was used, the grade its findings give, the override's reason;
    # then one column per finding (expanded from the stored findings below).
    ("rubric_used", "rubric_used"),
    ("derived_grade", "derived_grade_id"),
    ("override_reason", "override_reason"),
    ("counts_towards_confirmation", "counts_towards_confirmation"),
)
# Findings columns: (CSV header, Findings attribute); quadrant findings as "ST SN ...".
_FINDING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("finding_microaneurysms", "microaneurysms"),
    ("finding_haemorrhage_quadrants", "haemorrhages"),
    ("finding_haemorrhage_20plus_quadrants", "haemorrhages_severe"),
    ("finding_venous_beading_quadrants", "venous_beading"),
    ("finding_irma_quadrants", "irma"),
    ("finding_nv_disc", "nv_disc"),
    ("finding_nv_elsewhere", "nv_elsewhere"),
    ("finding_vitreous_preretinal_haemorrhage", "vitreous_preretinal_haemorrhage"),
    ("finding_hard_exudates", "hard_exudates"),
    ("finding_exudates_within_1dd_fovea", "exudates_near_fovea"),
    ("finding_cotton_wool_spots", "cotton_wool_spots"),
    ("finding_laser_scars", "laser_scars"),
)

# A prediction row: these columns, one probability column per grade of the scale, then the tail.
_PREDICTION_HEAD: tuple[Column, ...] = (
    ("prediction_id", "id"),
    ("created_at", "created_at"),
    *_IMAGE_COLUMNS,
    ("model_version", "model_version__name"),
    ("model_version_state", "model_version__state"),
    ("predicted_grade", "predicted_grade_id"),
)
_PREDICTION_TAIL: tuple[Column, ...] = (
    ("in_training", "in_training"),
    ("image_confirmed_grade", "image__confirmed_grade_id"),
    ("image_confirmed_ungradable", "image__confirmed_ungradable"),
    ("image_confirmation_method", "image__confirmation_method"),
)


def _headers(columns: Sequence[Column]) -> tuple[str, ...]:
    return tuple(header for header, _ in columns)


def _lookups(columns: Sequence[Column]) -> list[str]:
    return [lookup for _, lookup in columns]


GRADE_COLUMNS: tuple[str, ...] = (
    *_headers(_GRADE_EXPORT),
    *(header for header, _ in _FINDING_COLUMNS),
)


def _finding_cells(findings: dict | None, rubric_used: bool) -> list[str | int]:
    if not rubric_used:
        return [""] * len(_FINDING_COLUMNS)
    parsed = Findings.from_dict(findings)
    cells: list[str | int] = []
    for _, attribute in _FINDING_COLUMNS:
        value = getattr(parsed, attribute)
        cells.append(
            " ".join(q for q in QUADRANTS if q in value)
            if isinstance(value, frozenset)
            else int(value)
        )
    return cells


def csv_cell(value: Any) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def grades_export_rows(*, hidden_images: QuerySet | None = None) -> Iterator[Sequence[Any]]:
    """The header, then every grade ever recorded (corrections and superseded grades included);
    the grades of ``hidden_images`` (images the reader may still grade independently) are left
    out."""
    yield GRADE_COLUMNS
    grades = Grade.objects.order_by("id")
    if hidden_images is not None:
        grades = grades.exclude(image__in=hidden_images.values("pk"))
    rows = grades.values_list(*_lookups(_GRADE_EXPORT), "findings").iterator(
        chunk_size=EXPORT_CHUNK_SIZE
    )
    rubric_index = _lookups(_GRADE_EXPORT).index("rubric_used")
    for row in rows:
        yield [
            *(csv_cell(value) for value in row[:-1]),
            *_finding_cells(row[-1], bool(row[rubric_index])),
        ]


def prediction_columns(classes: Sequence[int]) -> tuple[str, ...]:
    return (
        *_headers(_PREDICTION_HEAD),
        *(f"p_grade_{value}" for value in classes),
        *_headers(_PREDICTION_TAIL),
    )


def _predictions_exported(
    *,
    model_version: ModelVersion | None,
    include_training: bool,
    hidden_images: QuerySet | None = None,
) -> QuerySet[Prediction]:
    queryset = Prediction.objects.order_by("id")
    if model_version is not None:
        queryset = queryset.filter(model_version=model_version)
    if not include_training:
        queryset = queryset.filter(in_training=False)
    if hidden_images is not None:  # the reader's blind images
        queryset = queryset.exclude(image__in=hidden_images.values("pk"))
    return queryset


def predictions_export_training_excluded(*, model_version: ModelVersion | None = None) -> int:
    """How many predictions the default export leaves out because their version was trained on
    the image."""
    queryset = Prediction.objects.filter(in_training=True)
    if model_version is not None:
        queryset = queryset.filter(model_version=model_version)
    return queryset.count()


def predictions_export_rows(
    *,
    model_version: ModelVersion | None = None,
    include_training: bool = False,
    hidden_images: QuerySet | None = None,
) -> Iterator[Sequence[Any]]:
    """The header, then every prediction (of one version, or of all), one probability column per
    grade of the scale. Predictions of images their version was trained on are left out unless
    ``include_training`` (their ``in_training`` column then says which they are); the
    ``hidden_images`` (the reader's blind images) are left out."""
    classes = scale_get().classes
    yield prediction_columns(classes)
    queryset = _predictions_exported(
        model_version=model_version, include_training=include_training, hidden_images=hidden_images
    )
    rows = queryset.values_list(
        *_lookups(_PREDICTION_HEAD), "probabilities", *_lookups(_PREDICTION_TAIL)
    ).iterator(chunk_size=EXPORT_CHUNK_SIZE)
    head = len(_PREDICTION_HEAD)
    for row in rows:
        probabilities = list(row[head] or [])
        # Pad a short vector so every row has one cell per grade of the scale.
        probabilities += [None] * (len(classes) - len(probabilities))
        yield [
            *(csv_cell(value) for value in row[:head]),
            *(csv_cell(p) for p in probabilities[: len(classes)]),
            *(csv_cell(value) for value in row[head + 1 :]),
        ]
