"""Reads of readers' correction requests (``CorrectionRequest``): which are open, and whether a
reader's correction of an image still changes their grade directly."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import QuerySet

from grading.models import CorrectionRequest, Image, Prediction


def correction_requests_open(*, image: Image) -> QuerySet[CorrectionRequest]:
    """The image's correction requests no adjudication has settled yet, oldest first."""
    return (
        CorrectionRequest.objects.filter(image_id=image.pk, resolved_at__isnull=True)
        .select_related("grader", "grade", "corrects")
        .order_by("created_at", "id")
    )


def correction_request_open_for(*, image: Image, grader: User) -> CorrectionRequest | None:
    """This reader's latest open correction request of the image, if any."""
    return correction_requests_open(image=image).filter(grader=grader).last()


def correction_goes_to_adjudicator(*, image: Image) -> bool:
    """Whether a reader's correction of this image becomes a request for the adjudicator rather
    than a new grade: once the image needs adjudication (a correction that re-confirmed by
    agreement would let the reader try values until the grades agree), or once a model has given
    an opinion of it, which its readers see after saving their grade (a correction could move
    towards it). The rule does not depend on who corrects, nor on the other grades' values, so it
    tells a reader nothing they could not see."""
    if image.grading_state == Image.GradingState.ADJUDICATION:
        return True
    return Prediction.objects.filter(image_id=image.pk).exists()
