"""The workbench's grading settings (admin)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods

from grading.forms.settings import WorkbenchSettingsForm
from grading.http import AuthenticatedHttpRequest
from grading.selectors import worklist as worklist_selectors
from grading.selectors.dicom import dicom_import_policy
from grading.services.workbench import workbench_settings_update
from grading.views.access import SETTINGS_PERMISSION, permission_required


@require_http_methods(["GET", "POST"])
@permission_required(SETTINGS_PERMISSION, raise_exception=True)
def workbench_settings(request: AuthenticatedHttpRequest) -> HttpResponse:
    current = worklist_selectors.workbench_settings_get()
    form = WorkbenchSettingsForm(request.POST or None, instance=current)
    if request.method == "POST":
        if form.is_valid():
            values = {name: form.cleaned_data[name] for name in WorkbenchSettingsForm.Meta.fields}
            _, settled = workbench_settings_update(**values)
            note = (
                f" {settled} pending image(s) now have enough grades and were settled."
                if settled
                else ""
            )
            messages.success(request, f"Grading settings saved.{note}")
            return redirect("workbench_settings")
        return render(
            request,
            "grading/grading/workbench_settings.html",
            {"form": form, "dicom": dicom_import_policy()},
            status=400,
        )
    return render(
        request,
        "grading/grading/workbench_settings.html",
        {"form": form, "dicom": dicom_import_policy()},
    )


@require_GET
@permission_required(SETTINGS_PERMISSION, raise_exception=True)
def settings_index(request: AuthenticatedHttpRequest) -> HttpResponse:
    return render(request, "grading/grading/settings_index.html")


urlpatterns = [
    path("settings/", settings_index, name="settings_index"),
    path("settings/grading/", workbench_settings, name="workbench_settings"),
]
