"""Uploading photographs: small uploads at once, large ones as a background import job."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.conf import settings
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods

from grading.forms.upload import UploadForm
from grading.http import AuthenticatedHttpRequest
from grading.models import Image, Job, Patient
from grading.selectors.model_versions import model_version_active
from grading.services.jobs import QueueUnavailable
from grading.services.uploads import (
    ZIP_MAX_MEMBERS,
    UploadOutcome,
    UploadReport,
    UploadVisit,
    upload_files_process,
    upload_is_large,
    upload_stage,
)
from grading.views.access import UPLOAD_PERMISSION, permission_required


def _upload_limits() -> dict[str, int]:
    return {
        "min_side": settings.FUNDUS_MIN_IMAGE_SIDE,
        "inline_max_files": settings.FUNDUS_UPLOAD_INLINE_MAX_FILES,
    }


def _upload_visit(form: UploadForm) -> UploadVisit:
    return UploadVisit(
        patient_pseudonym=form.cleaned_data["patient_id"],
        eye=form.cleaned_data["eye"],
        acquired_on=form.cleaned_data["acquired_on"],
    )


@require_GET
@permission_required(UPLOAD_PERMISSION, raise_exception=True)
def upload_job(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    """Progress and result of a large upload's background import (polled by htmx)."""
    job = get_object_or_404(Job, pk=job_id, kind=Job.Kind.IMAGES_IMPORT)
    if job.created_by_id != request.user.pk and not request.user.has_perm("grading.manage_jobs"):
        raise Http404("No such upload.")
    if request.htmx:
        return render(request, "grading/grading/_upload_job.html", {"job": job})
    return render(request, "grading/grading/upload_job.html", {"job": job})


REPORT_SESSION_KEY = "upload_report"


def _report_page(request: AuthenticatedHttpRequest, stored: dict[str, Any]) -> HttpResponse:
    """The result of the upload just made (shown once: a reload shows the empty form). A stored
    photograph held for a quality check says so instead of offering to grade it."""
    report = UploadReport(
        outcomes=[UploadOutcome(**outcome) for outcome in stored["outcomes"]],
        prediction_queued=stored["prediction_queued"],
    )
    fields = stored["fields"]
    held = set(
        Image.objects.filter(
            pk__in=report.accepted_ids, quality_review=Image.QualityReview.CHECK
        ).values_list("pk", flat=True)
    )
    ctx = {
        "form": UploadForm(initial=fields),
        "report": report,
        "held_ids": held,
        "patient": Patient.objects.filter(pseudonym=fields.get("patient_id", "")).first(),
        "zip_max_members": ZIP_MAX_MEMBERS,
        "active_model": model_version_active(),
        **_upload_limits(),
    }
    return render(request, "grading/grading/upload.html", ctx)


@require_http_methods(["GET", "POST"])
@permission_required(UPLOAD_PERMISSION, raise_exception=True)
def upload(request: AuthenticatedHttpRequest) -> HttpResponse:
    # Bound on every POST, an empty one too (its errors are read below).
    form = UploadForm(request.POST if request.method == "POST" else None)
    files = request.FILES.getlist("files") if request.method == "POST" else []
    report = None
    status = 200
    if request.method == "POST":
        if not files:
            form.add_error(None, "Choose at least one photograph or a .zip of photographs.")
        if form.is_valid() and upload_is_large(files):
            try:
                job = upload_stage(files=files, visit=_upload_visit(form), uploaded_by=request.user)
            except (QueueUnavailable, OSError) as error:
                form.add_error(
                    None,
                    f"{error} Large uploads are imported in the background; until it is back, "
                    f"upload at most {settings.FUNDUS_UPLOAD_INLINE_MAX_FILES} photographs at "
                    "once. Nothing was stored.",
                )
            else:
                return redirect("upload_job", job_id=job.pk)
        if form.is_valid():
            report = upload_files_process(
                files=files, visit=_upload_visit(form), uploaded_by=request.user
            )
            # POST/redirect/GET: the result page is a GET, so reloading it uploads nothing again.
            request.session[REPORT_SESSION_KEY] = {
                "outcomes": [asdict(outcome) for outcome in report.outcomes],
                "prediction_queued": report.prediction_queued,
                "fields": {name: form.data.get(name, "") for name in UploadForm.base_fields},
            }
            return redirect("upload")
        status = 400
    elif REPORT_SESSION_KEY in request.session:
        return _report_page(request, request.session.pop(REPORT_SESSION_KEY))
    ctx = {
        "form": form,
        "report": report,
        "zip_max_members": ZIP_MAX_MEMBERS,
        **_upload_limits(),
    }
    return render(request, "grading/grading/upload.html", ctx, status=status)


urlpatterns = [
    path("upload/", upload, name="upload"),
    path("upload/jobs/<int:job_id>/", upload_job, name="upload_job"),
]
