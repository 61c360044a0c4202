"""Reads for model assistance beside a grade: the active model's view of one image, and whether a
clinician may see it yet (blind reading)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth.models import User
from django.db.models import QuerySet

from grading import storage
from grading.models import GradeLevel, Image, ModelVersion, Prediction
from grading.selectors.abstention import prediction_abstention_reason
from grading.selectors.grading_scale import scale_get
from grading.selectors.visibility import image_others_hidden, images_others_hidden

# Re-exported for the pages that send an independent reader to the grading page.
from grading.selectors.visibility import reader_is_independent as reader_is_independent


def prediction_hidden(*, image: Image, user: User) -> bool:
    """Blind mode: every independent reader (the first, the second, an admin who grades) does not
    see the model's opinion until their own grade is saved; nor does a clinician on a
    certification image they have not graded (the visibility rule, ``selectors/visibility``)."""
    return image_others_hidden(image=image, user=user, model=True)


def images_read_independently_by(*, user: User) -> QuerySet[Image]:
    """The images whose other grades this user may not see (``selectors/visibility``)."""
    return images_others_hidden(user=user)


def images_blind_for(*, user: User) -> QuerySet[Image]:
    """The images whose predictions this user may not see yet (``selectors/visibility``)."""
    return images_others_hidden(user=user, model=True)


@dataclass(frozen=True)
class ProbabilityBar:
    level: GradeLevel
    probability: float

    @property
    def percent(self) -> float:
        return round(100 * self.probability, 1)


@dataclass(frozen=True)
class OrdinalView:
    """What ordinal decoding really uses: the expected grade (probability-weighted mean of the
    scale positions) and, per grade k above the lowest, P(grade >= k) with the threshold the
    expected grade must pass for grade k (when the version recorded its thresholds)."""

    expected: float
    at_least: list[ProbabilityBar]
    thresholds: list[float] | None


@dataclass(frozen=True)
class ModelView:
    """What the template shows in the model panel; ``state`` is one of hidden, no_model, pending,
    abstained, ready. ``ordinal``: set when the stored grade is not the most probable one (ordinal
    decoding), so the panel shows the quantities that chose it instead of per-grade bars that
    would contradict it."""

    state: str
    model_version: ModelVersion | None = None
    # Set (with state "abstained") when the photograph is below the gradability threshold or
    # outside the version's training domain: the panel shows no grade (selectors/abstention.py).
    abstention: str | None = None
    prediction: Prediction | None = None
    bars: list[ProbabilityBar] = field(default_factory=list)
    cam_available: bool = False
    ordinal: OrdinalView | None = None

    @property
    def predicted_grade(self) -> GradeLevel | None:
        return self.prediction.predicted_grade if self.prediction is not None else None


def _version_thresholds(version: ModelVersion) -> list[float] | None:
    """The ordinal thresholds (in scale positions) the version's head decodes with, from the
    version's record or its folder's metadata; None when it decodes by argmax or kept none."""
    import json

    thresholds = (version.metrics or {}).get("thresholds")
    if thresholds is None and version.artifact_path:
        path = storage.model_file_local(version.artifact_path, "metadata.json")
        try:
            metadata = json.loads(path.read_text()) if path is not None else {}
        except (OSError, ValueError):
            metadata = {}
        # "outputs" is what every artifact (head or fine-tuned) records for the pages; "head"
        # is where older head-only versions kept their decoding.
        decoded = metadata.get("outputs") or metadata.get("head") or {}
        thresholds = decoded.get("thresholds") if decoded.get("decoding") == "ordinal" else None
    return [float(t) for t in thresholds] if thresholds else None


def _ordinal_view(bars: list[ProbabilityBar], version: ModelVersion) -> OrdinalView:
    expected = sum(position * bar.probability for position, bar in enumerate(bars))
    at_least = [
        ProbabilityBar(level=bar.level, probability=sum(b.probability for b in bars[k:]))
        for k, bar in enumerate(bars)
        if k > 0
    ]
    thresholds = _version_thresholds(version)
    if thresholds is not None and len(thresholds) != len(at_least):
        thresholds = None
    return OrdinalView(
        expected=expected,
        at_least=at_least,
        thresholds=thresholds,
    )


def _predicted_is_most_probable(prediction: Prediction, bars: list[ProbabilityBar]) -> bool:
    if not bars:
        return True
    top = max(bar.probability for bar in bars)
    # Ties: any of the most probable grades is coherent with the bars.
    return any(
        bar.level.value == prediction.predicted_grade_id and bar.probability >= top - 1e-9
        for bar in bars
    )


def _probability_bars(prediction: Prediction) -> list[ProbabilityBar]:
    levels = scale_get().levels
    probabilities = list(prediction.probabilities or [])
    class_values = list(prediction.model_version.class_values or [])
    if len(class_values) == len(probabilities) and class_values:
        by_value = dict(zip(class_values, probabilities, strict=True))
        return [
            ProbabilityBar(level=level, probability=float(by_value.get(level.value, 0.0)))
            for level in levels
        ]
    # Stored in scale order (the documented layout) when the version does not say otherwise.
    return [
        ProbabilityBar(level=level, probability=float(probability))
        for level, probability in zip(levels, probabilities, strict=False)
    ]


def model_view_for(*, image: Image, user: User | None, reveal: bool = False) -> ModelView:
    """The active model's view of the image for this user. ``reveal`` skips the blind check (for
    reviewers' pages, where the model's view is part of the evidence)."""
    if not reveal and user is not None and prediction_hidden(image=image, user=user):
        return ModelView(state="hidden")
    from grading.selectors.model_versions import model_version_active
    from grading.selectors.predictions import prediction_for_image

    active = model_version_active()
    if active is None:
        return ModelView(state="no_model")
    prediction = prediction_for_image(image=image, model_version=active)
    if prediction is None:
        return ModelView(state="pending", model_version=active)
    abstention = prediction_abstention_reason(prediction=prediction)
    if abstention is not None:
        return ModelView(
            state="abstained", model_version=active, prediction=prediction, abstention=abstention
        )
    bars = _probability_bars(prediction)
    ordinal = None if _predicted_is_most_probable(prediction, bars) else _ordinal_view(bars, active)
    return ModelView(
        state="ready",
        model_version=active,
        prediction=prediction,
        bars=bars,
        cam_available=prediction_cam_file(prediction=prediction) is not None,
        ordinal=ordinal,
    )


def prediction_cam_file(*, prediction: Prediction) -> Path | None:
    """The class activation map PNG the worker wrote for this prediction, if it exists."""
    from grading.selectors.predictions import prediction_cam_path

    path = prediction_cam_path(prediction=prediction)
    return path if path is not None and Path(path).is_file() else None
