"""Writes for the site-wide grading policy (WorkbenchSettings)."""

from __future__ import annotations

from django.db import transaction

from grading.models import WorkbenchSettings
from grading.request_memo import request_memo_forget
from grading.selectors.worklist import WORKBENCH_SETTINGS_MEMO_KEY, workbench_settings_get
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
# The grading protocol's settings (lesion rubric, certification, quality gate): their own page.
PROTOCOL_FIELDS = (
    "rubric_enabled",
    "certification_mode",
    "certification_gates_confirmation",
    "certification_min_qwk",
    "certification_min_sensitivity",
    "certification_min_specificity",
    "certification_min_exact",
    "quality_gate_enabled",
    "quality_min_focus",
    "quality_max_clipped",
    "quality_min_coverage",
    "quality_min_resolution",
)
_QUALITY_FIELDS = {name for name in PROTOCOL_FIELDS if name.startswith("quality_")}


def workbench_settings_update(**values: object) -> tuple[WorkbenchSettings, int]:
    """Change the grading policy. Lowering the number of required grades settles pending images
    that already have enough; returns the settings and how many images changed state."""
    unknown = set(values) - set(EDITABLE_FIELDS) - set(PROTOCOL_FIELDS)
    if unknown:
        raise TypeError(f"not editable: {', '.join(sorted(unknown))}")
    # The request's memo must never hold a half-edited row (when validation refuses it) nor the
    # old one after the change: forget it either way.
    request_memo_forget(WORKBENCH_SETTINGS_MEMO_KEY)
    try:
        with transaction.atomic():
            current = workbench_settings_get()
            before = current.grades_required
            for name, value in values.items():
                setattr(current, name, value)
            current.full_clean()
            current.save()
    finally:
        request_memo_forget(WORKBENCH_SETTINGS_MEMO_KEY)
    settled = images_confirmation_refresh_all() if current.grades_required < before else 0
    if _QUALITY_FIELDS & set(values):
        from grading.services.quality import images_quality_rescore

        images_quality_rescore()
    return current, settled
