"""Funduscope's tables, by purpose: clinical data (``clinical``), model versions and predictions
(``model_versions``), background jobs (``jobs``), the feature manifest (``features``) and the workbench settings (``workbench``).

Import them from here: ``from grading.models import Image``.
"""

from __future__ import annotations

from grading.models.clinical import (
    CertificationItem,
    CorrectionRequest,
    Grade,
    GradeLevel,
    GradingClaim,
    Image,
    Patient,
)
from grading.models.features import FeatureChunk, FeatureShardRow
from grading.models.jobs import Job
from grading.models.model_versions import ModelVersion, Prediction, probabilities_entropy
from grading.models.workbench import WorkbenchSettings

__all__ = [
    "CertificationItem",
    "CorrectionRequest",
    "FeatureChunk",
    "FeatureShardRow",
    "Grade",
    "GradeLevel",
    "GradingClaim",
    "Image",
    "Job",
    "ModelVersion",
    "Patient",
    "Prediction",
    "WorkbenchSettings",
    "probabilities_entropy",
]
