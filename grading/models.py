"""Clinical data: patients, images, grades, model versions, predictions and background jobs.

Grades are append-only: a correction is a new row that supersedes the old one, so the full history of
who said what, and when, is always kept. The grade that training uses is stored explicitly on the
image (``confirmed_*`` fields) together with how it was reached.
"""

from __future__ import annotations

import math

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class GradeLevel(models.Model):
    """One step of the grading scale (ICDR 0-4 by default). ``value`` is the ordinal grade."""

    value = models.PositiveSmallIntegerField(primary_key=True)
    name = models.CharField(max_length=64)
    is_referable = models.BooleanField(
        default=False,
        help_text="Grades at or above referable DR (ICDR >= 2) need an ophthalmologist.",
    )

    class Meta:
        ordering = ["value"]

    def __str__(self) -> str:
        return f"{self.value} – {self.name}"


class Patient(models.Model):
    class Sex(models.TextChoices):
        FEMALE = "F", "Female"
        MALE = "M", "Male"
        OTHER = "X", "Other"
        UNKNOWN = "", "Unknown"

    class DiabetesType(models.TextChoices):
        TYPE_1 = "T1", "Type 1"
        TYPE_2 = "T2", "Type 2"
        GESTATIONAL = "GDM", "Gestational"
        OTHER = "OTHER", "Other"
        NONE = "NONE", "No diabetes"
        UNKNOWN = "", "Unknown"

    pseudonym = models.CharField(
        max_length=64,
        unique=True,
        help_text="Pseudonymous identifier; never a name or record number.",
    )
    birth_year = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1900), MaxValueValidator(2100)]
    )
    sex = models.CharField(max_length=1, choices=Sex.choices, blank=True, default="")
    diabetes_type = models.CharField(
        max_length=8, choices=DiabetesType.choices, blank=True, default=""
    )
    notes = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pseudonym"]
        constraints = [
            models.CheckConstraint(
                condition=Q(birth_year__isnull=True)
                | Q(birth_year__gte=1900, birth_year__lte=2100),
                name="patient_birth_year_plausible",
            )
        ]

    def __str__(self) -> str:
        return self.pseudonym


class Image(models.Model):
    class Eye(models.TextChoices):
        LEFT = "L", "Left"
        RIGHT = "R", "Right"
        UNKNOWN = "U", "Unknown"

    class GradingState(models.TextChoices):
        PENDING = "pending", "Needs grading"
        ADJUDICATION = "adjudication", "Needs adjudication"
        CONFIRMED = "confirmed", "Confirmed"

    class ConfirmationMethod(models.TextChoices):
        NONE = "", "Not confirmed"
        SINGLE = "single", "Single grader"
        AGREEMENT = "agreement", "Graders agreed"
        ADJUDICATION = "adjudication", "Adjudicated"
        IMPORT = "import", "Imported"

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="images")
    eye = models.CharField(max_length=1, choices=Eye.choices, default=Eye.UNKNOWN)
    acquired_on = models.DateField(null=True, blank=True)
    file = models.FileField(upload_to="images/", max_length=255)
    sha256 = models.CharField(max_length=64, unique=True, editable=False)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    original_filename = models.CharField(max_length=255, blank=True, default="")
    source = models.CharField(
        max_length=255, blank=True, default="", help_text="Where it came from, e.g. the import."
    )
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    uploaded_at = models.DateTimeField(auto_now_add=True)

    grading_state = models.CharField(
        max_length=16, choices=GradingState.choices, default=GradingState.PENDING
    )
    confirmed_grade = models.ForeignKey(
        GradeLevel, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    confirmed_ungradable = models.BooleanField(default=False)
    confirmed_macular_oedema = models.BooleanField(default=False)
    confirmation_method = models.CharField(
        max_length=16, choices=ConfirmationMethod.choices, blank=True, default=""
    )
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class QualityReview(models.TextChoices):
        NONE = "", "Not needed"
        CHECK = "check", "Check quality"
        PASSED = "passed", "Passed on by a clinician"
        UNGRADABLE = "ungradable", "Confirmed ungradable"

    quality_measures = models.JSONField(
        default=dict, blank=True, help_text="mlcore.data.quality measures, computed at upload."
    )
    quality_score = models.FloatField(
        null=True,
        blank=True,
        help_text="Gradability 0-1; below 0.5 a measure misses its threshold.",
    )
    quality_review = models.CharField(
        max_length=16, choices=QualityReview.choices, blank=True, default=""
    )
    quality_reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-uploaded_at", "-id"]
        indexes = [
            models.Index(fields=["patient", "eye", "acquired_on"]),
            models.Index(fields=["grading_state", "uploaded_at"]),
            models.Index(fields=["confirmed_grade"]),
            # The review's cache stamp reads the latest confirmation (see selectors/review_cache).
            models.Index(fields=["confirmed_at"], name="image_confirmed_at"),
            # The "random" queue order walks this index from a point chosen by the user's seed.
            models.Index(
                fields=["sha256"],
                condition=Q(grading_state="pending"),
                name="image_pending_sha256",
            ),
            # "Model disagrees by two grades or more" joins the active version's predictions with
            # these images: an index-only scan of them (id, confirmed grade) keeps that join at
            # ~30 ms at 100,000 images instead of a ~100 ms scan of the whole table.
            # (Key columns rather than INCLUDE: SQLite has no covering indexes.)
            models.Index(
                fields=["id", "confirmed_grade"],
                condition=Q(
                    grading_state="confirmed",
                    confirmed_grade__isnull=False,
                    confirmed_ungradable=False,
                )
                & ~Q(confirmation_method="adjudication"),
                name="image_model_flag_candidates",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(sha256__regex=r"^[0-9a-f]{64}$"), name="image_sha256_is_hex"
            ),
            models.CheckConstraint(condition=Q(width__gt=0, height__gt=0), name="image_has_pixels"),
            # A confirmed image has either a grade or the ungradable flag, never both.
            models.CheckConstraint(
                condition=~Q(grading_state="confirmed")
                | Q(confirmed_grade__isnull=False, confirmed_ungradable=False)
                | Q(confirmed_grade__isnull=True, confirmed_ungradable=True),
                name="image_confirmed_grade_consistent",
            ),
        ]
        permissions = [
            ("grade_image", "Can grade images"),
            ("upload_image", "Can upload images"),
            ("adjudicate_image", "Can adjudicate disagreements"),
            ("review_agreement", "Can review model and grader agreement"),
            ("export_data", "Can export grades and predictions"),
        ]

    def __str__(self) -> str:
        return f"{self.patient} {self.get_eye_display()} {self.sha256[:10]}"


class Grade(models.Model):
    """One grader's (or an import's, or an adjudicator's) opinion of one image. Never edited."""

    class Kind(models.TextChoices):
        GRADER = "grader", "Independent grade"
        ADJUDICATION = "adjudication", "Adjudication"
        IMPORT = "import", "Imported"
        CERTIFICATION = "certification", "Certification (graded against a reference)"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="grades")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.GRADER)
    grader = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="grades",
    )
    source = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text="Named source for grades not from a person.",
    )
    grade = models.ForeignKey(
        GradeLevel, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    ungradable = models.BooleanField(default=False)
    macular_oedema = models.BooleanField(default=False)
    notes = models.TextField(blank=True, default="")
    findings = models.JSONField(
        default=dict,
        blank=True,
        help_text="Lesion rubric (mlcore.data.rubric.Findings.to_dict); empty when the rubric was not used.",
    )
    rubric_used = models.BooleanField(default=False)
    derived_grade = models.ForeignKey(
        GradeLevel,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The ICDR grade the findings imply (4-2-1 rule); kept beside an override.",
    )
    override_reason = models.TextField(blank=True, default="")
    counts_towards_confirmation = models.BooleanField(
        default=True,
        help_text="False for a grade from a clinician not yet certified when the gate is on.",
    )
    supersedes = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="superseded_by"
    )
    adjudicator_graded = models.BooleanField(
        default=False,
        help_text="An adjudication by one of the image's own graders (allowed by the settings).",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["image", "grader", "created_at"]),
            models.Index(fields=["grader", "created_at"], name="grade_grader_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(grade__isnull=False, ungradable=False)
                | Q(grade__isnull=True, ungradable=True),
                name="grade_value_or_ungradable",
            ),
            models.CheckConstraint(
                condition=Q(grader__isnull=False) | ~Q(source=""),
                name="grade_has_grader_or_source",
            ),
        ]

    def __str__(self) -> str:
        value = "ungradable" if self.ungradable else self.grade_id
        return f"{self.image_id}: {value} by {self.grader or self.source}"

    def save(self, *args, **kwargs) -> None:
        # History is the point of this table: a correction is a new row that supersedes this one.
        if self.pk is not None and not self._state.adding:
            raise ValidationError("Grades are never changed in place; record a correction instead.")
        super().save(*args, **kwargs)

    def clean(self) -> None:
        if self.ungradable and self.grade_id is not None:
            raise ValidationError("An ungradable image has no grade value.")
        if not self.ungradable and self.grade_id is None:
            raise ValidationError("Choose a grade or mark the image ungradable.")

    @property
    def findings_text(self) -> str:
        from mlcore.data.rubric import Findings, findings_describe

        return findings_describe(Findings.from_dict(self.findings))


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


class Job(models.Model):
    class Kind(models.TextChoices):
        FEATURES_EXTRACT = "features_extract", "Feature extraction"
        IMAGES_AUGMENT = "images_augment", "Augmentation"
        MODEL_TRAIN = "model_train", "Retraining"
        MODEL_EVALUATE = "model_evaluate", "Cross-validation of a new version"
        PREDICTIONS_REFRESH = "predictions_refresh", "Batch prediction"
        IMAGES_PREDICT = "images_predict", "Prediction of new uploads"
        IMAGES_IMPORT = "images_import", "Import of a large upload"

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
            # jobs (predictions, imports) run side by side.
            models.UniqueConstraint(
                fields=["kind"],
                condition=Q(state__in=["queued", "running"])
                & ~Q(kind__in=["images_predict", "images_import"]),
                name="one_open_job_per_kind",
            ),
        ]
        permissions = [("manage_jobs", "Can cancel and retry background jobs")]

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


class GradingClaim(models.Model):
    """A short lease on an image served to a grader, so two graders working the same queue are
    not handed the same image when only one more grade is needed."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="claims")
    grader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["image", "grader"], name="one_claim_per_image_and_grader"
            )
        ]

    def __str__(self) -> str:
        return f"{self.grader} holds image {self.image_id} until {self.expires_at:%H:%M}"


class CertificationItem(models.Model):
    """One photograph of the certification (gold) set, with its trusted reference grade. Never
    shown to a clinician before they have saved their own certification grade of it."""

    image = models.OneToOneField(Image, on_delete=models.CASCADE, related_name="certification_item")
    reference_grade = models.ForeignKey(GradeLevel, on_delete=models.PROTECT, related_name="+")
    reference_macular_oedema = models.BooleanField(default=False)
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        permissions = [("manage_certification", "Can manage the certification set")]

    def __str__(self) -> str:
        return f"certification image {self.image_id} (reference {self.reference_grade_id})"


class WorkbenchSettings(models.Model):
    """Site-wide grading policy an admin changes in the browser (a single row)."""

    class QueueOrder(models.TextChoices):
        OLDEST = "oldest", "Oldest first"
        RANDOM = "random", "Random"
        UNCERTAIN = "uncertain", "Most uncertain first"

    grades_required = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(2)]
    )
    blind_first_grader = models.BooleanField(
        default=True, help_text="Hide the model's prediction until the first grader saves a grade."
    )
    queue_order = models.CharField(
        max_length=16, choices=QueueOrder.choices, default=QueueOrder.OLDEST
    )
    claim_minutes = models.PositiveSmallIntegerField(default=10)
    allow_uncertain_order_when_blind = models.BooleanField(
        default=False,
        help_text=(
            "Let blind readers order their queue by the model's uncertainty. This reveals the "
            "model's confidence (an image near the top is one the model cannot decide)."
        ),
    )
    allow_self_adjudication = models.BooleanField(
        default=False,
        help_text=(
            "Let a reviewer adjudicate a disagreement they graded themselves (small clinics); "
            "the adjudication records it."
        ),
    )
    auto_retrain_after = models.PositiveIntegerField(
        default=0,
        help_text="Start a candidate retrain after this many new confirmed grades (0: off).",
    )

    class CertificationMode(models.TextChoices):
        SESSION = "session", "A dedicated certification session first"
        MIXED = "mixed", "Mixed into the grading queue"

    rubric_enabled = models.BooleanField(
        default=True,
        help_text="Record lesion findings; the ICDR grade is derived from them (4-2-1 rule).",
    )
    certification_mode = models.CharField(
        max_length=16, choices=CertificationMode.choices, default=CertificationMode.SESSION
    )
    certification_gates_confirmation = models.BooleanField(
        default=True,
        help_text="Grades of clinicians who have not passed certification do not confirm images.",
    )
    certification_min_qwk = models.FloatField(
        default=0.7, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    certification_min_sensitivity = models.FloatField(
        default=0.8, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    certification_min_specificity = models.FloatField(
        default=0.8, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    certification_min_exact = models.FloatField(
        default=0.6, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    quality_gate_enabled = models.BooleanField(
        default=True, help_text="Send photographs below the gradability threshold to a check."
    )
    quality_min_focus = models.FloatField(
        default=3.0,
        validators=[MinValueValidator(0.0)],
        help_text="Variance of the Laplacian at 512 px (sharpness).",
    )
    quality_max_clipped = models.FloatField(
        default=0.3,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Largest share of the fundus that may be clipped dark or bright.",
    )
    quality_min_coverage = models.FloatField(
        default=0.5,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Smallest share of the frame inside the fundus disc.",
    )
    quality_min_resolution = models.PositiveIntegerField(
        default=224, help_text="Smallest short side in pixels."
    )

    class Meta:
        verbose_name_plural = "workbench settings"
        constraints = [
            models.CheckConstraint(
                condition=Q(grades_required__gte=1, grades_required__lte=2),
                name="settings_grades_required_1_or_2",
            )
        ]

    def __str__(self) -> str:
        return "Workbench settings"
