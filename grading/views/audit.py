"""The audit trail page: every change that matters (settings, model activation and rollback,
retrain requests, adjudications, admin edits, accounts and roles), newest first."""

from __future__ import annotations

from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET

from grading.forms.audit import AuditFilterForm
from grading.http import AuthenticatedHttpRequest
from grading.selectors.audit import (
    audit_changes_text,
    audit_entries,
    audit_entries_filtered,
    audit_user_names,
)

AUDIT_PAGE_SIZE = 100


@require_GET
@permission_required("auditlog.view_logentry", raise_exception=True)
def audit_trail(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    entries = audit_entries(viewer=request.user)
    if form.is_bound and not form.is_valid():
        return render(request, "grading/audit.html", {"form": form, "rows": []}, status=400)
    filters = dict(form.cleaned_data) if form.is_bound else {}
    page_number = filters.pop("page", None)
    filters = {name: value for name, value in filters.items() if value not in (None, "")}
    entries = audit_entries_filtered(entries=entries, **filters)
    page = Paginator(entries, AUDIT_PAGE_SIZE).get_page(page_number)
    names = audit_user_names(entries=page.object_list)
    rows = [(entry, audit_changes_text(entry, names)) for entry in page.object_list]
    query = request.GET.copy()
    query.pop("page", None)
    ctx = {"page": page, "rows": rows, "form": form, "filter_query": query.urlencode()}
    return render(request, "grading/audit.html", ctx)


urlpatterns = [path("audit/", audit_trail, name="audit_trail")]
