"""Rows for the CSV exports: one row per grade and one row per prediction.

Rows are produced lazily from ``values_list(...).iterator(chunk_size=...)``: the database hands them
over in chunks (a server-side cursor on PostgreSQL), so an export of 100,000 rows never holds more than
one chunk of plain tuples in memory, and no model instances are built.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

from grading.models import Grade, ModelVersion, Prediction
from grading.selectors.review import scale_get

EXPORT_CHUNK_SIZE = 2000
# Spreadsheet programs run a cell starting with one of these as a formula ("CSV injection"); free
# text typed by users (notes, names) is therefore prefixed with an apostrophe when it starts so.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

GRADE_COLUMNS: tuple[str, ...] = (
    "grade_id",
    "created_at",
    "image_id",
    "image_sha256",
    "patient",
    "eye",
    "acquired_on",
    "kind",
    "grader",
    "source",
    "grade",
    "ungradable",
    "macular_oedema",
    "notes",
    "supersedes_grade_id",
    "superseded_by_grade_id",
    "image_confirmed_grade",
    "image_confirmation_method",
)


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


def grades_export_rows() -> Iterator[Sequence[Any]]:
    """The header, then every grade ever recorded (corrections and superseded grades included)."""
    yield GRADE_COLUMNS
    rows = (
        Grade.objects.order_by("id")
        .values_list(
            "id",
            "created_at",
            "image_id",
            "image__sha256",
            "image__patient__pseudonym",
            "image__eye",
            "image__acquired_on",
            "kind",
            "grader__username",
            "source",
            "grade_id",
            "ungradable",
            "macular_oedema",
            "notes",
            "supersedes_id",
            "superseded_by__id",
            "image__confirmed_grade_id",
            "image__confirmation_method",
        )
        .iterator(chunk_size=EXPORT_CHUNK_SIZE)
    )
    for row in rows:
        yield [csv_cell(value) for value in row]


def prediction_columns(classes: Sequence[int]) -> tuple[str, ...]:
    return (
        "prediction_id",
        "created_at",
        "image_id",
        "image_sha256",
        "patient",
        "eye",
        "acquired_on",
        "model_version",
        "model_version_state",
        "predicted_grade",
        *(f"p_grade_{value}" for value in classes),
        "image_confirmed_grade",
        "image_confirmed_ungradable",
        "image_confirmation_method",
    )


def predictions_export_rows(
    *, model_version: ModelVersion | None = None
) -> Iterator[Sequence[Any]]:
    """The header, then every prediction (of one version, or of all), one probability column per
    grade of the scale."""
    classes = scale_get().classes
    yield prediction_columns(classes)
    queryset = Prediction.objects.order_by("id")
    if model_version is not None:
        queryset = queryset.filter(model_version=model_version)
    rows = queryset.values_list(
        "id",
        "created_at",
        "image_id",
        "image__sha256",
        "image__patient__pseudonym",
        "image__eye",
        "image__acquired_on",
        "model_version__name",
        "model_version__state",
        "predicted_grade_id",
        "probabilities",
        "image__confirmed_grade_id",
        "image__confirmed_ungradable",
        "image__confirmation_method",
    ).iterator(chunk_size=EXPORT_CHUNK_SIZE)
    for row in rows:
        probabilities = list(row[10] or [])
        # Pad a short vector so every row has one cell per grade of the scale.
        probabilities += [None] * (len(classes) - len(probabilities))
        yield [
            *(csv_cell(value) for value in row[:10]),
            *(csv_cell(p) for p in probabilities[: len(classes)]),
            *(csv_cell(value) for value in row[11:]),
        ]
