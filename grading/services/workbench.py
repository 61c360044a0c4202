"""Writes for the site-wide grading policy (WorkbenchSettings)."""

from __future__ import annotations

from django.db import transaction

from grading.models import WorkbenchSettings
from grading.selectors.worklist import workbench_settings_get
from grading.services.grades import images_confirmation_refresh_all

EDITABLE_FIELDS = (
    "grades_required",
    "blind_first_grader",
    "queue_order",
    "claim_minutes",
    "auto_retrain_after",
    "allow_uncertain_order_when_blind",
    "allow_self_adjudication",
)


def workbench_settings_update(**values: object) -> tuple[WorkbenchSettings, int]:
    """Change the grading policy. Lowering the number of required grades settles pending images
    that already have enough; returns the settings and how many images changed state."""
    unknown = set(values) - set(EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"not editable: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        current = workbench_settings_get()
        before = current.grades_required
        for name, value in values.items():
            setattr(current, name, value)
        current.full_clean()
        current.save()
    settled = images_confirmation_refresh_all() if current.grades_required < before else 0
    return current, settled
