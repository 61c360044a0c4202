"""When the model abstains: a prediction is shown as "photo not gradable by the model" instead of
a grade when its photograph is below the gradability threshold (grading/services/quality.py) or
its features lie outside the version's training domain (``Prediction.ood_score`` above 1, see
mlcore.models.ood). The model was trained on neither kind, so its confidence there means nothing.

The gradability half follows the installation's quality gate: with ``FUNDUS_QUALITY_GATE=0`` (an
installation whose thresholds do not fit its photographs, like the test suite's 64 px ones) the
score is not trusted to hold a photograph back, nor to silence the model.
"""

from __future__ import annotations

from django.conf import settings
from django.db.models import Q

from grading.models import Prediction

# A gradability score below this misses a quality threshold (mlcore.data.quality).
GRADABLE_FROM = 0.5
# An out-of-distribution score above this lies beyond the inner split's quantile.
OOD_LIMIT = 1.0

REASON_GRADABILITY = "gradability"
REASON_OUT_OF_DOMAIN = "out_of_domain"


def prediction_abstention_reason(*, prediction: Prediction) -> str | None:
    """Why the model abstains on this prediction's photograph, or None when it answers."""
    score = prediction.image.quality_score
    if settings.FUNDUS_QUALITY_GATE and score is not None and score < GRADABLE_FROM:
        return REASON_GRADABILITY
    if prediction.ood_score is not None and prediction.ood_score > OOD_LIMIT:
        return REASON_OUT_OF_DOMAIN
    return None


def prediction_abstains_q(prefix: str = "") -> Q:
    """The abstaining predictions, as a filter on Prediction (``prefix``: the path to the
    prediction from another model, e.g. ``"predictions__"``)."""
    out_of_domain = Q(**{f"{prefix}ood_score__gt": OOD_LIMIT})
    if not settings.FUNDUS_QUALITY_GATE:
        return out_of_domain
    return Q(**{f"{prefix}image__quality_score__lt": GRADABLE_FROM}) | out_of_domain
