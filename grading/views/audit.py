"""The audit trail page: every change that matters (settings, model activation and rollback,
retrain requests, adjudications, admin edits, accounts and roles), newest first."""

from __future__ import annotations

from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET

from grading.http import AuthenticatedHttpRequest
from grading.selectors.audit import audit_changes_text, audit_entries

AUDIT_PAGE_SIZE = 100


@require_GET
@permission_required("auditlog.view_logentry", raise_exception=True)
def audit_trail(request: AuthenticatedHttpRequest) -> HttpResponse:
    page = Paginator(audit_entries(viewer=request.user), AUDIT_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    rows = [(entry, audit_changes_text(entry)) for entry in page.object_list]
    return render(request, "grading/audit.html", {"page": page, "rows": rows})


urlpatterns = [path("audit/", audit_trail, name="audit_trail")]
