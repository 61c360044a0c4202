"""Model versions and their predictions of the images."""

from __future__ import annotations

import math

from django.conf import settings
from django.db import models
from django.db.models import Q

from grading.models.clinical import GradeLevel, Image


class ModelVersion(models.Model):
    class State(models.TextChoices):
        TRAINING = "training", "Training"
        CANDIDATE = "candidate", "Candidate"
        ACTIVE = "active", "Active"
        RETIRED = "retired", "Retired"
        FAILED = "failed", "Failed"

    name = models.CharField(max_length=64, unique=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.TRAINING)
    artifact_path = models.CharField(max_length=500, blank=True, default="")
    backbones = models.JSONField(default=list)
    preprocessing = models.CharField(max_length=32, default="none")
    class_values = models.JSONField(default=list, help_text="Grade values in output order.")
    train_counts = models.JSONField(default=dict, help_text="Training images per grade.")
    holdout_sha256 = models.JSONField(default=list, help_text="Hold-out images, for comparison.")
    metrics = models.JSONField(default=dict)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    trained_at = models.DateTimeField(
        null=True, blank=True, help_text="When training finished (started: created_at)."
    )
    activated_at = models.DateTimeField(null=True, blank=True)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["state"], condition=Q(state="active"), name="one_active_model_version"
            )
        ]
        permissions = [
            ("retrain_model", "Can start retraining"),
            ("activate_model", "Can activate or roll back model versions"),
        ]

    # Set by the activation service for its audit entry ("activation", "rollback"); not stored.
    audit_note = ""

    def __str__(self) -> str:
        return self.name

    def get_additional_data(self) -> dict[str, str] | None:
        """What django-auditlog stores beside the change (the kind of activation)."""
        return {"note": self.audit_note} if self.audit_note else None

    @property
    def training_duration(self):
        """How long training took (None for versions that did not record when it finished)."""
        return self.trained_at - self.created_at if self.trained_at else None


class Prediction(models.Model):
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="predictions"
    )
    probabilities = models.JSONField(help_text="One probability per grade, in scale order.")
    predicted_grade = models.ForeignKey(GradeLevel, on_delete=models.PROTECT, related_name="+")
    # The version was trained on this image (its confirmed grade was in the training set): its
    # prediction there is optimistic, so agreement figures leave these rows out by default.
    in_training = models.BooleanField(
        default=False,
        db_index=True,
        help_text="The model version was trained on this image.",
    )
    # Stored so "most uncertain first" walks an index instead of reading every prediction's JSON.
    entropy = models.FloatField(
        null=True, blank=True, help_text="Shannon entropy (nats) of the probabilities."
    )
    # Distance of the photograph's features to the version's training features over the threshold
    # set on its inner split (mlcore.models.ood): above 1, the model abstains. None: not measured.
    ood_score = models.FloatField(
        null=True, blank=True, help_text="Out-of-distribution score (above 1: outside training)."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["model_version", "predicted_grade"]),
            models.Index(fields=["model_version", "-entropy"], name="prediction_version_entropy"),
            # The API lists a version's predictions in id order, held-out ones by default: pages
            # are found by an index-only scan of this index, whatever the page number.
            models.Index(
                fields=["model_version", "in_training", "id"], name="prediction_version_listing"
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["image", "model_version"], name="one_prediction_per_image_and_version"
            )
        ]

    def __str__(self) -> str:
        return f"{self.image_id} -> {self.predicted_grade_id} ({self.model_version})"

    def save(self, *args, **kwargs) -> None:
        if self.entropy is None and self.probabilities:
            self.entropy = probabilities_entropy(self.probabilities)
        super().save(*args, **kwargs)


def probabilities_entropy(probabilities) -> float:
    """Shannon entropy (nats) of one prediction: highest when the model cannot decide."""
    values = [float(p) for p in probabilities]
    total = sum(values)
    if total <= 0:
        return 0.0
    return -sum((p / total) * math.log(p / total) for p in values if p > 0)
