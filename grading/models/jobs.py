"""Background jobs: one row per Celery job, its state, progress and outcome."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from grading.models.model_versions import ModelVersion


class Job(models.Model):
    class Kind(models.TextChoices):
        FEATURES_EXTRACT = "features_extract", "Feature extraction"
        IMAGES_AUGMENT = "images_augment", "Augmentation"
        MODEL_TRAIN = "model_train", "Retraining"
        MODEL_EVALUATE = "model_evaluate", "Cross-validation of a new version"
        PREDICTIONS_REFRESH = "predictions_refresh", "Batch prediction"
        IMAGES_PREDICT = "images_predict", "Prediction of new uploads"
        IMAGES_IMPORT = "images_import", "Import of a large upload"
        DICOM_RECEIVE = "dicom_receive", "DICOM photographs received (C-STORE)"

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    progress = models.PositiveSmallIntegerField(
        default=0, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    message = models.CharField(max_length=500, blank=True, default="")
    error = models.TextField(blank=True, default="")
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    celery_task_id = models.CharField(max_length=255, blank=True, default="")
    worker = models.CharField(max_length=255, blank=True, default="")
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "kind"])]
        constraints = [
            models.CheckConstraint(condition=Q(progress__lte=100), name="job_progress_max_100"),
            # Two retrain requests at once must produce one job, whatever the race. Per-upload
            # jobs (predictions, imports, DICOM associations) run side by side.
            models.UniqueConstraint(
                fields=["kind"],
                condition=Q(state__in=["queued", "running"])
                & ~Q(kind__in=["images_predict", "images_import", "dicom_receive"]),
                name="one_open_job_per_kind",
            ),
        ]
        permissions = [("manage_jobs", "Can cancel and retry background jobs")]

    # Set by selectors.home on the failures it shows (the first line worth reading); not stored.
    error_headline = ""

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.state})"

    @property
    def is_open(self) -> bool:
        return self.state in (self.State.QUEUED, self.State.RUNNING)

    @property
    def duration(self):
        if self.started_at is None:
            return None
        end = self.finished_at or self.heartbeat_at
        return (end - self.started_at) if end else None
