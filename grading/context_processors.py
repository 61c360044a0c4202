from __future__ import annotations

from django.http import HttpRequest


def workbench(request: HttpRequest) -> dict[str, bool]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "can_grade": user.has_perm("grading.grade_image"),
        "can_upload": user.has_perm("grading.upload_image"),
        "can_adjudicate": user.has_perm("grading.adjudicate_image"),
        "can_review": user.has_perm("grading.review_agreement"),
        "can_retrain": user.has_perm("grading.retrain_model"),
        "can_change_settings": user.has_perm("grading.change_workbenchsettings"),
        "can_view_audit": user.has_perm("auditlog.view_logentry"),
        # Clinicians take the certification set; admins and reviewers manage or read it.
        "can_see_certification": user.has_perm("grading.grade_image")
        or user.has_perm("grading.manage_certification")
        or user.has_perm("grading.review_agreement"),
    }
