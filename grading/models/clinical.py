"""Clinical data: the grading scale, patients, their images and the grades given to them, the
graders' claims on images and the certification set.

Grades are append-only: a correction is a new row that supersedes the old one, so the full history of
who said what, and when, is always kept. The grade that training uses is stored explicitly on the
image (``confirmed_*`` fields) together with how it was reached.
"""

from __future__ import annotations

from pathlib import Path

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
    # From DICOM headers, and only when FUNDUS_DICOM_KEEP_DEMOGRAPHICS says so (empty otherwise).
    name = models.CharField(max_length=255, blank=True, default="")
    birth_date = models.DateField(null=True, blank=True)
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
    # A 256-bit DCT hash of the picture (mlcore.data.near_duplicates), computed at import:
    # copies of one photograph are kept on one side of every training split. Blank: unknown.
    perceptual_hash = models.CharField(max_length=64, blank=True, default="", editable=False)
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
    # The fields that say whether and how the image's grade is confirmed: written together.
    CONFIRMATION_FIELDS = (
        "grading_state",
        "confirmed_grade",
        "confirmed_ungradable",
        "confirmed_macular_oedema",
        "confirmation_method",
        "confirmed_by",
        "confirmed_at",
    )

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
    # DICOM UIDs of a photograph imported from a DICOM object (empty otherwise): traceability to
    # the camera's or PACS's study, and de-duplication (one image per SOP instance).
    study_instance_uid = models.CharField(max_length=64, blank=True, default="")
    series_instance_uid = models.CharField(max_length=64, blank=True, default="")
    sop_instance_uid = models.CharField(max_length=64, blank=True, default="")

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
            models.UniqueConstraint(
                fields=["sop_instance_uid"],
                condition=~Q(sop_instance_uid=""),
                name="image_one_per_sop_instance",
            ),
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

    # Set by selectors.patients.images_reference_mask for the grade badge (a certification image
    # whose reference the viewer may not see yet); not stored.
    reference_hidden = False

    def __str__(self) -> str:
        return f"{self.patient} {self.get_eye_display()} {self.sha256[:10]}"

    @property
    def media_path(self) -> Path:
        """The photograph's file on disk."""
        if not self.file.name:
            raise ValueError(f"Image {self.pk} has no file")
        return Path(settings.MEDIA_ROOT) / self.file.name


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


class CorrectionRequest(models.Model):
    """A reader's correction that may no longer change the image's grade by itself: once the
    image needs adjudication, or once the reader has seen the model's opinion, a correction could
    find another reader's grade (by trying values until the grades agree) or move towards the
    model. It goes to the adjudicator's queue instead, with its reason; their adjudication
    settles it."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="correction_requests")
    grader = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="correction_requests"
    )
    corrects = models.ForeignKey(Grade, on_delete=models.PROTECT, related_name="+")
    grade = models.ForeignKey(
        GradeLevel, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    ungradable = models.BooleanField(default=False)
    macular_oedema = models.BooleanField(default=False)
    notes = models.TextField(blank=True, default="")
    reason = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(grade__isnull=False, ungradable=False)
                | Q(grade__isnull=True, ungradable=True),
                name="correction_value_or_ungradable",
            ),
        ]

    def __str__(self) -> str:
        value = "ungradable" if self.ungradable else self.grade_id
        return f"{self.image_id}: correction to {value} requested by {self.grader}"
