"""The site-wide grading policy an admin changes in the browser."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


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
