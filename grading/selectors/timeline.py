"""The history of one image: upload, every grade (corrections included), every prediction and the
confirmation, in time order. Nothing is deleted from this history; corrections are shown superseding
the grade they correct.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from django.db.models import Prefetch

from grading.models import Grade, Image, Prediction
from grading.selectors.assistance import prediction_hidden
from grading.selectors.certification import reference_hidden
from grading.selectors.grader_agreement import BASIS_AGREEMENT, BASIS_OWN_SINGLE, grade_basis
from grading.selectors.grading_scale import Scale, scale_get
from grading.selectors.visibility import image_others_hidden

EventKind = Literal["upload", "grade", "prediction", "confirmation"]
# Among events with the same timestamp, the natural order: the upload, then grades, then
# predictions, then the confirmation they led to.
_KIND_ORDER: dict[str, int] = {"upload": 0, "grade": 1, "prediction": 2, "confirmation": 3}


@dataclass
class ProbabilityBar:
    value: int
    label: str
    probability: float
    is_predicted: bool

    @property
    def percent(self) -> float:
        return round(self.probability * 100, 1)


@dataclass
class TimelineEvent:
    kind: EventKind
    at: dt.datetime
    grade: Grade | None = None
    prediction: Prediction | None = None
    probabilities: list[ProbabilityBar] = field(default_factory=list)
    is_basis: bool = False  # this grade is (part of) what the confirmed grade rests on
    sequence: int = 0

    @property
    def sort_key(self) -> tuple[Any, ...]:
        return (self.at, _KIND_ORDER[self.kind], self.sequence)

    @property
    def decoded_beyond_the_tallest_bar(self) -> bool:
        """The predicted grade is not the most probable one (ordinal decoding chose it)."""
        if not self.probabilities:
            return False
        top = max(bar.probability for bar in self.probabilities)
        return not any(b.is_predicted and b.probability >= top - 1e-9 for b in self.probabilities)


@dataclass
class Timeline:
    image: Image
    events: list[TimelineEvent]
    confirmation: str  # how the confirmed grade was reached, in words
    grades_withheld: bool  # other graders' grades withheld from this viewer (independent grading)
    predictions_hidden: bool  # the model's predictions withheld (blind reading)
    grade_count: int
    prediction_count: int
    # A certification image this clinician has not graded yet: its reference (the confirmed grade
    # and everything leading to it) is withheld.
    reference_hidden: bool = False


def _probability_bars(prediction: Prediction, scale: Scale) -> list[ProbabilityBar]:
    values = scale.classes
    if len(prediction.probabilities) != len(values):
        # Stored "in scale order" by contract; a version trained on another scale says so itself.
        values = list(prediction.model_version.class_values or range(len(prediction.probabilities)))
    return [
        ProbabilityBar(
            value=value,
            label=scale.label(value),
            probability=float(probability),
            is_predicted=value == prediction.predicted_grade_id,
        )
        for value, probability in zip(values, prediction.probabilities, strict=False)
    ]


def _grade_value_text(grade: Grade) -> str:
    # A grade has a value or the ungradable flag (a database constraint), never neither.
    if grade.ungradable or grade.grade is None:
        return "ungradable"
    return f"{grade.grade_id} ({grade.grade.name})"


def _who(grade: Grade) -> str:
    return grade.grader.get_username() if grade.grader is not None else grade.source


def _confirmation_text(image: Image, basis: list[Grade]) -> str:
    method = Image.ConfirmationMethod
    if image.grading_state != Image.GradingState.CONFIRMED:
        return f"Not confirmed yet ({image.get_grading_state_display().lower()})."
    # A confirmed image has a grade or the ungradable flag (a database constraint).
    level = image.confirmed_grade
    value = (
        "ungradable"
        if image.confirmed_ungradable or level is None
        else f"grade {image.confirmed_grade_id} ({level.name})"
    )
    who = ", ".join(f"{_who(grade)} ({_grade_value_text(grade)})" for grade in basis)
    if image.confirmation_method == method.IMPORT:
        sources = ", ".join(_who(grade) for grade in basis)
        return f"Confirmed as {value} by import from {sources or image.source or 'an import'}."
    if image.confirmation_method == method.SINGLE:
        return f"Confirmed as {value} from a single grade: {who or 'one grader'}."
    if image.confirmation_method == method.AGREEMENT:
        return f"Confirmed as {value} because the independent graders agreed: {who}."
    if image.confirmation_method == method.ADJUDICATION:
        reviewer = image.confirmed_by
        adjudicator = reviewer.get_username() if reviewer is not None else "a reviewer"
        return f"Confirmed as {value} by {adjudicator}'s adjudication of the graders' disagreement."
    return f"Confirmed as {value}."


def _basis_grades(image: Image, grades: list[Grade]) -> list[Grade]:
    """The grades the confirmed grade rests on (latest non-superseded ones before confirmation)."""
    if image.grading_state != Image.GradingState.CONFIRMED or image.confirmed_at is None:
        return []
    current = [
        grade
        for grade in grades
        if not grade_is_superseded(grade) and grade.created_at <= image.confirmed_at
    ]
    method = Image.ConfirmationMethod
    if image.confirmation_method == method.IMPORT:
        return [grade for grade in current if grade.kind == Grade.Kind.IMPORT][-1:]
    if image.confirmation_method == method.ADJUDICATION:
        return [grade for grade in current if grade.kind == Grade.Kind.ADJUDICATION][-1:]
    latest_per_grader: dict[int, Grade] = {}
    for grade in current:
        if grade.kind != Grade.Kind.GRADER or grade.grader_id is None:
            continue
        relation = grade_basis(
            grader_id=grade.grader_id,
            graded_at=grade.created_at,
            confirmation_method=image.confirmation_method,
            confirmed_by_id=image.confirmed_by_id,
            confirmed_at=image.confirmed_at,
        )
        if relation in (BASIS_OWN_SINGLE, BASIS_AGREEMENT):
            latest_per_grader[grade.grader_id] = grade
    return list(latest_per_grader.values())


def grade_is_superseded(grade: Grade) -> bool:
    """Whether a later grade corrects this one (reverse one-to-one: absent raises)."""
    try:
        return grade.superseded_by is not None
    except Grade.superseded_by.RelatedObjectDoesNotExist:
        return False


def timeline_hides_others(*, image: Image, viewer: Any) -> bool:
    """Whether the history shows only the viewer's own grades: the visibility rule
    (``selectors/visibility``), as on every other page."""
    return image_others_hidden(image=image, user=viewer)


def image_timeline(*, image_id: int, viewer: Any, scale: Scale | None = None) -> Timeline:
    """Raises Image.DoesNotExist for an unknown image."""
    scale = scale or scale_get()
    image = (
        Image.objects.select_related("patient", "confirmed_grade", "confirmed_by", "uploaded_by")
        .prefetch_related(
            Prefetch(
                "grades",
                queryset=Grade.objects.select_related(
                    "grader", "grade", "supersedes", "superseded_by"
                ).order_by("created_at", "id"),
            ),
            Prefetch(
                "predictions",
                queryset=Prediction.objects.select_related(
                    "model_version", "predicted_grade"
                ).order_by("created_at", "id"),
            ),
        )
        .get(pk=image_id)
    )
    grades = list(image.grades.all())
    predictions = list(image.predictions.all())
    basis_ids = {grade.pk for grade in _basis_grades(image, grades)}
    confirmation = _confirmation_text(image, [g for g in grades if g.pk in basis_ids])

    grades_withheld = timeline_hides_others(image=image, viewer=viewer)
    if grades_withheld:
        grades = [grade for grade in grades if grade.grader_id == viewer.pk]
    # The same rule as the grading page's model panel, so this page never reveals what that one
    # hides (a blinded first reader sees the model only after saving their grade).
    predictions_withheld = prediction_hidden(image=image, user=viewer)
    if predictions_withheld:
        predictions = []

    hide_reference = reference_hidden(image=image, user=viewer)
    if hide_reference:
        confirmation = (
            "Certification image: its reference grade is shown once you have saved yours."
        )
    events = [TimelineEvent(kind="upload", at=image.uploaded_at)]
    events += [
        TimelineEvent(
            kind="grade", at=grade.created_at, grade=grade, is_basis=grade.pk in basis_ids
        )
        for grade in grades
    ]
    events += [
        TimelineEvent(
            kind="prediction",
            at=prediction.created_at,
            prediction=prediction,
            probabilities=_probability_bars(prediction, scale),
        )
        for prediction in predictions
    ]
    if (
        image.grading_state == Image.GradingState.CONFIRMED
        and image.confirmed_at is not None
        and not hide_reference
    ):
        events.append(TimelineEvent(kind="confirmation", at=image.confirmed_at))
    for sequence, event in enumerate(events):
        event.sequence = sequence
    events.sort(key=lambda event: event.sort_key)
    return Timeline(
        image=image,
        events=events,
        confirmation=confirmation,
        grades_withheld=grades_withheld,
        predictions_hidden=predictions_withheld,
        grade_count=len(grades),
        prediction_count=len(predictions),
        reference_hidden=hide_reference,
    )
