"""Model registry (versions, comparison, activation, rollback, retraining) and the jobs page.

Admin pages. The web process never imports TensorFlow: it reads the registry from the database
and the plots from the version's folder, and hands all heavy work to the workers through jobs.
With Redis down every page still renders; actions that need the queue say it is unavailable.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from grading import storage
from grading.forms.models import ActivationConfirmForm, ModelCompareForm, RetrainForm
from grading.http import AuthenticatedHttpRequest
from grading.models import GradeLevel, Job, ModelVersion
from grading.selectors import jobs as job_selectors
from grading.selectors import model_versions as version_selectors
from grading.selectors.predictions import predictions_missing_count
from grading.services import jobs as job_services
from grading.services import model_versions as version_services
from grading.views.access import permission_required


def _back(request: AuthenticatedHttpRequest, default: str) -> HttpResponse:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect(default)


def _queue_context() -> dict[str, Any]:
    """Whether the queue answers, for the Retrain button (asked once per page, ~1 ms)."""
    available = job_services.queue_is_available(timeout=0.5)
    return {
        "queue_available": available,
        "queue_message": "" if available else job_services.queue_unavailable_message(),
        "training_job": job_selectors.job_training_open(),
    }


def _activation_messages(
    request: AuthenticatedHttpRequest, activation: version_services.Activation
) -> None:
    text = f"{activation.version.name} is now the active model"
    if activation.previous is not None:
        text += f" (it replaces {activation.previous.name}, which you can re-activate)"
    messages.success(request, text + ".")
    if activation.refresh_error:
        messages.warning(
            request,
            "Images it has not graded yet will be predicted once the job queue is back: "
            + activation.refresh_error,
        )


# ---------------------------------------------------------------------------------------------
# Model registry


@require_GET
@permission_required("grading.retrain_model", raise_exception=True)
def model_versions(request: AuthenticatedHttpRequest) -> HttpResponse:
    versions = list(version_selectors.model_versions_list())
    active = next((v for v in versions if v.state == ModelVersion.State.ACTIVE), None)
    evaluation_jobs = version_selectors.model_version_evaluation_jobs()
    training_jobs = version_selectors.model_version_training_jobs()
    rows = [
        {
            "version": version,
            "headline": version_selectors.model_version_headline(version=version),
            "evaluation_job": evaluation_jobs.get(version.pk),
            "train_counts": sorted(
                ((int(grade), count) for grade, count in version.train_counts.items()),
                key=lambda item: item[0],
            ),
            "auto_activated": version_selectors.model_version_auto_activated(version=version),
            "took": version_selectors.model_version_took(
                version=version, job=training_jobs.get(version.pk)
            ),
        }
        for version in versions
    ]
    candidates = [v for v in versions if v.state == ModelVersion.State.CANDIDATE]
    ctx = {
        "rows": rows,
        "active": active,
        "missing_predictions": predictions_missing_count(model_version=active) if active else 0,
        "rollback_target": version_selectors.model_version_rollback_target() if active else None,
        "ever_activated": version_selectors.model_version_ever_activated(),
        "compare_versions": [v for v in versions if _comparable(v)],
        "compare_default_a": active.pk if active else None,
        "compare_default_b": candidates[0].pk if candidates else None,
        **_queue_context(),
    }
    return render(request, "grading/models/list.html", ctx)


@require_GET
@permission_required("grading.retrain_model", raise_exception=True)
def model_version_detail(request: AuthenticatedHttpRequest, version_id: int) -> HttpResponse:
    version = get_object_or_404(ModelVersion.objects.select_related("created_by"), pk=version_id)
    cv = version.metrics.get("cv") or {}
    holdout = cv.get("pooled") or version.metrics.get("holdout") or {}
    scale = version_selectors.grade_scale()
    per_grade = holdout.get("per_grade") or {}
    ctx = {
        "version": version,
        "headline": version_selectors.model_version_headline(version=version),
        "holdout": holdout,
        "per_grade_rows": [
            {"level": level, **(per_grade.get(str(level.value)) or {})} for level in scale
        ],
        "confusion_rows": _confusion_rows(holdout, scale),
        "scale": scale,
        "train_counts": [(level, version.train_counts.get(str(level.value), 0)) for level in scale],
        "plots": version_selectors.model_version_plots(version=version),
        "training_job": version_selectors.model_version_training_job(version=version),
        "evaluation_job": version_selectors.model_version_evaluation_job(version=version),
        "cv": cv,
        "auto_activated": version_selectors.model_version_auto_activated(version=version),
        "took": version_selectors.model_version_took(
            version=version, job=version_selectors.model_version_training_job(version=version)
        ),
        "predictions": version.predictions.count(),
    }
    return render(request, "grading/models/detail.html", ctx)


def _confusion_rows(
    report: dict[str, Any], scale: list[GradeLevel]
) -> list[tuple[GradeLevel, list[int]]]:
    matrix = report.get("confusion") or []
    if len(matrix) != len(scale):
        return []
    return list(zip(scale, matrix, strict=True))


@require_GET
@permission_required("grading.retrain_model", raise_exception=True)
def model_compare(request: AuthenticatedHttpRequest) -> HttpResponse:
    versions = [v for v in version_selectors.model_versions_list() if _comparable(v)]
    # Keyed for the form's ids, which stay empty (None) when not chosen or invalid.
    by_id: dict[int | None, ModelVersion] = {v.pk: v for v in versions}
    chosen = ModelCompareForm(request.GET)
    chosen.is_valid()  # an invalid choice is left empty: the page asks for two versions
    first = by_id.get(chosen.cleaned_data.get("a"))
    second = by_id.get(chosen.cleaned_data.get("b"))
    ctx: dict[str, Any] = {
        "versions": versions,
        "first": first,
        "second": second,
        "comparison": None,
    }
    if first is not None and second is not None:
        if first.pk == second.pk:
            ctx["error"] = "Choose two different versions to compare."
        else:
            comparison = version_selectors.model_versions_compare(first=first, second=second)
            scale = version_selectors.grade_scale()
            ctx["comparison"] = comparison
            ctx["columns"] = [
                {
                    "version": version,
                    "headline": version_selectors.metrics_headline(report),
                    "confusion_rows": _confusion_rows(report, scale),
                }
                for version in (first, second)
                if (report := comparison.reports.get(version.pk)) is not None
            ]
            ctx["scale"] = scale
    return render(request, "grading/models/compare.html", ctx)


def _comparable(version: ModelVersion) -> bool:
    """Versions with predictions of images they never trained on (hold-out or cross-validation)."""
    return bool(version.holdout_sha256) or version.metrics.get("evaluation") == "done"


@require_GET
@permission_required("grading.retrain_model", raise_exception=True)
def model_artifact_file(
    request: AuthenticatedHttpRequest, version_id: int, filename: str
) -> FileResponse:
    # Only the known plot files, resolved inside the version's own folder: no path from the URL
    # ever reaches the file system.
    if filename not in version_selectors.PLOT_FILES:
        raise Http404("No such file.")
    version = get_object_or_404(ModelVersion, pk=version_id)
    if not version.artifact_path:
        raise Http404("This version has no files.")
    file_path = storage.model_file_local(version.artifact_path, filename)
    if file_path is None:
        raise Http404("The file is missing.")
    response = FileResponse(file_path.open("rb"), content_type="image/png")
    response["Cache-Control"] = "private, max-age=300"
    return response


def _worse_not_accepted(request: AuthenticatedHttpRequest, target: ModelVersion) -> bool:
    """A POST that would activate a version the paired comparison finds worse than the active
    one, without the explicit second confirmation."""
    active = version_selectors.model_version_active()
    if active is None or active.pk == target.pk:
        return False
    paired = version_selectors.model_versions_compare(first=active, second=target).paired
    form = ActivationConfirmForm(request.POST)
    accepted = form.is_valid() and form.cleaned_data["accept_worse"]
    return bool(paired and paired["verdict"] == "worse" and not accepted)


def _confirmation(
    request: AuthenticatedHttpRequest,
    *,
    target: ModelVersion,
    action: str,
    action_url: str,
    status: int = 200,
) -> HttpResponse:
    """The page that asks before a version is switched: what will change, and the paired
    comparison of the version to activate with the one now active."""
    active = version_selectors.model_version_active()
    comparison = None
    if active is not None and active.pk != target.pk:
        comparison = version_selectors.model_versions_compare(first=active, second=target)
    ctx = {
        "target": target,
        "active": active,
        "action": action,
        "action_url": action_url,
        "comparison": comparison,
        "target_headline": version_selectors.model_version_headline(version=target),
        "active_headline": (
            version_selectors.model_version_headline(version=active) if active else None
        ),
        "next": request.GET.get("next", ""),
        "worse_refused": status == 400,
    }
    return render(request, "grading/models/confirm.html", ctx, status=status)


@require_http_methods(["GET", "POST"])
@permission_required("grading.activate_model", raise_exception=True)
def model_version_activate(request: AuthenticatedHttpRequest, version_id: int) -> HttpResponse:
    """GET: the confirmation page with the paired comparison; POST: activate."""
    version = get_object_or_404(ModelVersion, pk=version_id)
    if request.method == "GET":
        return _confirmation(
            request,
            target=version,
            action="activate",
            action_url=reverse("model_version_activate", args=[version.pk]),
        )
    if _worse_not_accepted(request, version):
        return _confirmation(
            request,
            target=version,
            action="activate",
            action_url=reverse("model_version_activate", args=[version.pk]),
            status=400,
        )
    try:
        activation = version_services.model_version_activate(version=version, user=request.user)
    except version_services.ModelVersionError as error:
        messages.error(request, str(error))
    else:
        _activation_messages(request, activation)
    return _back(request, reverse("model_versions"))


@require_http_methods(["GET", "POST"])
@permission_required("grading.activate_model", raise_exception=True)
def model_rollback(request: AuthenticatedHttpRequest) -> HttpResponse:
    """GET: the confirmation page (re-activating the previously active version, compared with
    the active one); POST: do it."""
    if request.method == "GET":
        target = version_selectors.model_version_rollback_target()
        if target is None:
            messages.error(request, "There is no previously active version to return to.")
            return redirect("model_versions")
        return _confirmation(
            request, target=target, action="rollback", action_url=reverse("model_rollback")
        )
    target = version_selectors.model_version_rollback_target()
    if target is not None and _worse_not_accepted(request, target):
        return _confirmation(
            request,
            target=target,
            action="rollback",
            action_url=reverse("model_rollback"),
            status=400,
        )
    try:
        activation = version_services.model_version_rollback(user=request.user)
    except version_services.ModelVersionError as error:
        messages.error(request, str(error))
    else:
        _activation_messages(request, activation)
    return redirect("model_versions")


@require_POST
@permission_required("grading.retrain_model", raise_exception=True)
def model_retrain(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = RetrainForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Retraining was not started: unknown training mode.")
        return _back(request, reverse("model_versions"))
    mode = form.cleaned_data["mode"] or "head"
    try:
        job, created = version_services.model_retrain_request(user=request.user, mode=mode)
    except job_services.QueueUnavailable as error:
        messages.error(request, f"Retraining was not started. {error}")
        return _back(request, reverse("model_versions"))
    except version_services.TrainingDataError as error:
        messages.error(request, str(error))
        return _back(request, reverse("model_versions"))
    if created:
        what = "Fine-tuning" if mode == "finetune" else "Retraining"
        messages.success(
            request,
            f"{what} queued (job #{job.pk}). The new version will be a candidate: "
            "compare it with the active one, then activate it.",
        )
    else:
        messages.info(
            request,
            f"A retrain is already {job.get_state_display().lower()} (job #{job.pk}); "
            "no second one was started.",
        )
    return redirect("jobs")


# ---------------------------------------------------------------------------------------------
# Jobs


def _job_get(job_id: int) -> Job:
    """The job with what its row shows (who started it, the version it made), or 404."""
    return get_object_or_404(Job.objects.select_related("created_by", "model_version"), pk=job_id)


def _can_manage_jobs(request: AuthenticatedHttpRequest) -> bool:
    return request.user.has_perm("grading.manage_jobs")


@require_GET
@permission_required("grading.retrain_model", raise_exception=True)
def jobs(request: AuthenticatedHttpRequest) -> HttpResponse:
    ctx = {
        "jobs": job_selectors.jobs_list(),
        "can_manage": _can_manage_jobs(request),
        "startable": STARTABLE_KINDS.items(),
        **_queue_context(),
    }
    return render(request, "grading/jobs/list.html", ctx)


@require_GET
@permission_required("grading.retrain_model", raise_exception=True)
def job_detail(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    job = _job_get(job_id)
    ctx = {
        "job": job,
        "error_headline": job_selectors.job_error_headline(job=job),
        "can_manage": _can_manage_jobs(request),
    }
    return render(request, "grading/jobs/detail.html", ctx)


@require_GET
@permission_required("grading.retrain_model", raise_exception=True)
def job_progress(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    """One job's table row, polled by htmx every second while the job is open."""
    job = _job_get(job_id)
    ctx = {"job": job, "can_manage": _can_manage_jobs(request)}
    response = render(request, "grading/jobs/_job_row.html", ctx)
    if request.htmx and not job.is_open:
        # The job just finished: reload the page so that everything that depends on it (the
        # Retrain button, links to the new version) is current. Finished rows do not poll, so
        # this happens once.
        response["HX-Refresh"] = "true"
    return response


# Jobs an admin may start by hand from the jobs page (retraining has its own button).
STARTABLE_KINDS = {
    Job.Kind.FEATURES_EXTRACT: "Compute missing features",
    Job.Kind.IMAGES_AUGMENT: "Augment the training images",
    Job.Kind.PREDICTIONS_REFRESH: "Predict images the active model has not seen",
}


@require_POST
@permission_required("grading.manage_jobs", raise_exception=True)
def job_start(request: AuthenticatedHttpRequest) -> HttpResponse:
    kind = request.POST.get("kind", "")
    if kind not in STARTABLE_KINDS:
        messages.error(request, "Unknown kind of job.")
        return redirect("jobs")
    try:
        job, created = job_services.job_enqueue(kind=kind, created_by=request.user)
    except job_services.QueueUnavailable as error:
        messages.error(request, str(error))
        return redirect("jobs")
    label = Job.Kind(kind).label
    if created:
        messages.success(request, f"{label} queued (job #{job.pk}).")
    else:
        messages.info(
            request, f"{label} is already {job.get_state_display().lower()} (job #{job.pk})."
        )
    return redirect("jobs")


@require_POST
@permission_required("grading.manage_jobs", raise_exception=True)
def job_cancel(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(Job, pk=job_id)
    try:
        job_services.job_cancel(job=job)
    except job_services.JobStateError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Job #{job.pk} cancelled.")
    return _back(request, reverse("jobs"))


@require_POST
@permission_required("grading.manage_jobs", raise_exception=True)
def job_retry(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(Job, pk=job_id)
    try:
        new_job = job_services.job_retry(job=job, user=request.user)
    except (job_services.JobStateError, job_services.QueueUnavailable) as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Job #{job.pk} queued again as job #{new_job.pk}.")
    return _back(request, reverse("jobs"))


urlpatterns = [
    path("models/", model_versions, name="model_versions"),
    path("models/compare/", model_compare, name="model_compare"),
    path("models/retrain/", model_retrain, name="model_retrain"),
    path("models/rollback/", model_rollback, name="model_rollback"),
    path("models/<int:version_id>/", model_version_detail, name="model_version_detail"),
    path(
        "models/<int:version_id>/activate/", model_version_activate, name="model_version_activate"
    ),
    path(
        "models/<int:version_id>/files/<str:filename>",
        model_artifact_file,
        name="model_artifact_file",
    ),
    path("jobs/", jobs, name="jobs"),
    path("jobs/start/", job_start, name="job_start"),
    path("jobs/<int:job_id>/", job_detail, name="job_detail"),
    path("jobs/<int:job_id>/progress/", job_progress, name="job_progress"),
    path("jobs/<int:job_id>/cancel/", job_cancel, name="job_cancel"),
    path("jobs/<int:job_id>/retry/", job_retry, name="job_retry"),
]
