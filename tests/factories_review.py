"""Factories for the review area: model versions, predictions, grades with chosen timestamps,
confirmations, and many images at once without photographs (bulk_create)."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from typing import TypeVar

from django.utils import timezone

from grading.models import Grade, Image, ModelVersion, Patient, Prediction

_counter = itertools.count(1)
SCALE = (0, 1, 2, 3, 4)
_Row = TypeVar("_Row", ModelVersion, Prediction, Grade)


def at(day: int, hour: int = 12, *, month: int = 3, year: int = 2025) -> dt.datetime:
    """A fixed, readable timestamp: ``at(5)`` is 5 March 2025, noon (current time zone)."""
    return timezone.make_aware(dt.datetime(year, month, day, hour))


def _backdate(row: _Row, created: dt.datetime | None) -> _Row:
    """Set the row's ``created_at`` (an auto_now_add field, so only an update can change it)."""
    if created is not None:
        type(row).objects.filter(pk=row.pk).update(created_at=created)
        row.refresh_from_db()
    return row


def model_version_make(
    name: str | None = None,
    *,
    state: str = ModelVersion.State.CANDIDATE,
    created: dt.datetime | None = None,
) -> ModelVersion:
    version = ModelVersion.objects.create(
        name=name or f"v{next(_counter)}", state=state, class_values=list(SCALE)
    )
    return _backdate(version, created)


def probabilities_for(grade: int, *, confidence: float = 0.6) -> list[float]:
    rest = (1.0 - confidence) / (len(SCALE) - 1)
    return [confidence if value == grade else rest for value in SCALE]


def prediction_make(
    *,
    image: Image,
    model_version: ModelVersion,
    grade: int,
    probabilities: list[float] | None = None,
    created: dt.datetime | None = None,
    in_training: bool = False,
) -> Prediction:
    prediction = Prediction.objects.create(
        image=image,
        model_version=model_version,
        predicted_grade_id=grade,
        probabilities=probabilities or probabilities_for(grade),
        in_training=in_training,
    )
    return _backdate(prediction, created)


def grade_make(
    *,
    image: Image,
    grader=None,
    source: str = "",
    value: int | None = None,
    ungradable: bool = False,
    macular_oedema: bool = False,
    kind: str = Grade.Kind.GRADER,
    supersedes: Grade | None = None,
    notes: str = "",
    created: dt.datetime | None = None,
) -> Grade:
    grade = Grade.objects.create(
        image=image,
        grader=grader,
        source=source,
        kind=kind,
        grade_id=value,
        ungradable=ungradable,
        macular_oedema=macular_oedema,
        supersedes=supersedes,
        notes=notes,
    )
    return _backdate(grade, created)


def grade_correct(grade: Grade, **fields: object) -> Grade:
    """The same grader's correction of ``grade``: a new grade of the same kind superseding it."""
    return grade_make(
        image=grade.image, grader=grade.grader, kind=grade.kind, supersedes=grade, **fields
    )


def image_confirm(
    *,
    image: Image,
    method: str,
    value: int | None = None,
    ungradable: bool = False,
    by=None,
    when: dt.datetime | None = None,
) -> Image:
    Image.objects.filter(pk=image.pk).update(
        grading_state=Image.GradingState.CONFIRMED,
        confirmed_grade_id=value,
        confirmed_ungradable=ungradable,
        confirmation_method=method,
        confirmed_by=by,
        confirmed_at=when or timezone.now(),
    )
    image.refresh_from_db()
    return image


def images_bulk_make(
    count: int,
    *,
    confirmed_grades: list[int | None] | None = None,
    patient: Patient | None = None,
    uploaded: dt.datetime | None = None,
) -> list[Image]:
    """Images without photographs (a file name only), fast enough for thousands of rows."""
    patient = patient or Patient.objects.create(pseudonym=f"BULK{next(_counter):06d}")
    images = []
    for i in range(count):
        digest = hashlib.sha256(f"bulk-{next(_counter)}-{i}".encode()).hexdigest()
        grade = confirmed_grades[i] if confirmed_grades else None
        images.append(
            Image(
                patient=patient,
                eye=Image.Eye.LEFT if i % 2 else Image.Eye.RIGHT,
                file=f"images/{digest[:2]}/{digest}.jpg",
                sha256=digest,
                width=64,
                height=64,
                grading_state=Image.GradingState.CONFIRMED
                if grade is not None
                else Image.GradingState.PENDING,
                confirmed_grade_id=grade,
                confirmation_method=Image.ConfirmationMethod.IMPORT if grade is not None else "",
                confirmed_at=timezone.now() if grade is not None else None,
            )
        )
    created = Image.objects.bulk_create(images, batch_size=1000)
    if uploaded is not None:
        Image.objects.filter(pk__in=[image.pk for image in created]).update(uploaded_at=uploaded)
    return created
