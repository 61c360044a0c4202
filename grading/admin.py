from __future__ import annotations

from typing import Any, cast

from auditlog.admin import LogEntryAdmin
from auditlog.models import LogEntry
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django import forms
from django.contrib import admin
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest

from grading.models import (
    CertificationItem,
    CorrectionRequest,
    Grade,
    GradeLevel,
    GradingClaim,
    Image,
    Job,
    ModelVersion,
    Patient,
    Prediction,
    WorkbenchSettings,
)
from grading.selectors.audit import audit_hidden_q
from grading.selectors.certification import reference_hidden_ids
from grading.selectors.visibility import (
    certification_items_visible_q,
    grades_visible_q,
    predictions_visible_q,
)

# Every admin page that lists grades, predictions or references filters them with the visibility
# rule (selectors/visibility.py): an admin who grades reads blind here too, and a change page of
# a withheld row is a 404, like a row that does not exist.


@admin.register(GradeLevel)
class GradeLevelAdmin(admin.ModelAdmin):
    list_display = ["value", "name", "is_referable"]


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ["pseudonym", "birth_year", "sex", "diabetes_type", "created_at"]
    search_fields = ["pseudonym"]


GRADE_INLINE_FIELDS = (
    "kind",
    "grader",
    "source",
    "grade",
    "ungradable",
    "macular_oedema",
    "notes",
    "created_at",
)


class GradeInline(admin.TabularInline):
    model = Grade
    extra = 0
    can_delete = False
    fields = GRADE_INLINE_FIELDS
    readonly_fields = GRADE_INLINE_FIELDS

    def has_add_permission(self, request: HttpRequest, obj: Image | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Grade]:
        return super().get_queryset(request).filter(grades_visible_q(user=request.user))


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "patient",
        "eye",
        "acquired_on",
        "grading_state",
        "confirmed_grade",
        "uploaded_at",
    ]
    list_filter = ["grading_state", "eye", "confirmed_grade", "confirmation_method"]
    search_fields = ["sha256", "patient__pseudonym", "original_filename"]
    # The confirmed grade and how it was reached change only through grading and adjudication,
    # which keep a Grade row for every decision; an edit here would leave the history crediting
    # the wrong source.
    readonly_fields = [
        "sha256",
        "width",
        "height",
        "uploaded_at",
        "uploaded_by",
        *Image.CONFIRMATION_FIELDS,
    ]
    raw_id_fields = ["patient"]
    inlines = [GradeInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Image]:
        # A certification image's confirmed grade is its reference (a clinician with staff
        # access sees it once they have graded it).
        hidden = reference_hidden_ids(user=cast(User, request.user))
        return super().get_queryset(request).exclude(pk__in=hidden)


@admin.register(Grade)
class GradeAdmin(admin.ModelAdmin):
    list_display = ["id", "image", "kind", "grader", "source", "grade", "ungradable", "created_at"]
    list_filter = ["kind", "grade", "ungradable"]
    raw_id_fields = ["image", "supersedes"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Grade]:
        return super().get_queryset(request).filter(grades_visible_q(user=request.user))

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A grade is recorded on the grading pages by the person who gives it: an admin never
        # records one on someone's behalf (the history would credit the wrong clinician).
        return False

    def has_change_permission(self, request: HttpRequest, obj: Grade | None = None) -> bool:
        return False  # grades are append-only

    def has_delete_permission(self, request: HttpRequest, obj: Grade | None = None) -> bool:
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "state", "created_at", "activated_at", "activated_by", "created_by"]
    list_filter = ["state"]
    # Activation and rollback go through the registry page (one active version, audit note).
    readonly_fields = ["state", "activated_at", "activated_by"]


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ["id", "image", "model_version", "predicted_grade", "created_at"]
    list_filter = ["model_version", "predicted_grade"]
    raw_id_fields = ["image"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Prediction]:
        return super().get_queryset(request).filter(predictions_visible_q(user=request.user))


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "state", "progress", "message", "created_by", "created_at"]
    list_filter = ["kind", "state"]
    # An import job deletes the folder its parameters name once it is done: the parameters (and
    # what the job is) are set by the page that starts it, never edited here.
    readonly_fields = ["kind", "params", "created_by", "model_version"]


@admin.register(GradingClaim)
class GradingClaimAdmin(admin.ModelAdmin):
    """Read-only: claims are short leases the grading pages take and release (minutes), written
    on every page view and so left out of the audit trail; nothing here changes them."""

    list_display = ["image", "grader", "expires_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: GradingClaim | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: GradingClaim | None = None) -> bool:
        return False


@admin.register(WorkbenchSettings)
class WorkbenchSettingsAdmin(admin.ModelAdmin):
    list_display = ["grades_required", "blind_first_grader", "queue_order", "auto_retrain_after"]

    def has_change_permission(
        self, request: HttpRequest, obj: WorkbenchSettings | None = None
    ) -> bool:
        # Settings change on the grading settings page, which validates them together (blind
        # reading and queue order) and settles images when fewer grades are required.
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # one row, made by the migrations


@admin.register(CertificationItem)
class CertificationItemAdmin(admin.ModelAdmin):
    """Mark single images as certification images (the reference is their confirmed grade when
    added through the certification page; here an admin may set it explicitly)."""

    list_display = ("image", "reference_grade", "reference_macular_oedema", "added_by", "added_at")
    list_filter = ("reference_grade",)
    raw_id_fields = ("image",)
    readonly_fields = ("added_by", "added_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[CertificationItem]:
        return (
            super().get_queryset(request).filter(certification_items_visible_q(user=request.user))
        )

    def save_model(
        self,
        request: HttpRequest,
        obj: CertificationItem,
        form: forms.ModelForm,
        change: bool,
    ) -> None:
        if not change:
            obj.added_by = cast(User, request.user)  # the admin site admits only signed-in staff
        super().save_model(request, obj, form, change)


@admin.register(CorrectionRequest)
class CorrectionRequestAdmin(admin.ModelAdmin):
    """Readers' correction requests, settled by adjudication (read-only here)."""

    list_display = ["id", "image", "grader", "grade", "ungradable", "created_at", "resolved_at"]
    list_filter = ["resolved_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[CorrectionRequest]:
        return super().get_queryset(request).filter(grades_visible_q(user=request.user))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: CorrectionRequest | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: CorrectionRequest | None = None
    ) -> bool:
        return False


class VisibleLogEntryAdmin(LogEntryAdmin):
    """django-auditlog's own pages, filtered as the audit page is (``audit_hidden_q``)."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[LogEntry]:
        return super().get_queryset(request).exclude(audit_hidden_q(viewer=request.user))


admin.site.unregister(LogEntry)
admin.site.register(LogEntry, VisibleLogEntryAdmin)


class ReadOnlyAccessAdmin(admin.ModelAdmin):
    """django-axes' login records, read-only: written on every login attempt, so not audited;
    unlocking an account (deleting its attempts) is, with who did it (``_axes_deletes_log``)."""

    def has_add_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        _axes_deletes_log([obj])
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        _axes_deletes_log(list(queryset))
        super().delete_queryset(request, queryset)


def _axes_deletes_log(rows: list[Any]) -> None:
    for row in rows:
        LogEntry.objects.log_create(row, action=LogEntry.Action.DELETE, changes={}, force_log=True)


for _model in (AccessAttempt, AccessLog, AccessFailureLog):
    _base = type(admin.site._registry[_model])
    admin.site.unregister(_model)
    admin.site.register(_model, type(f"ReadOnly{_base.__name__}", (ReadOnlyAccessAdmin, _base), {}))
