"""Model drift page (reviewers and admins): the active version's week-by-week drift."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET

from grading.http import AuthenticatedHttpRequest
from grading.selectors.drift import MEASURES, drift_report
from grading.views.access import permission_required


@permission_required("grading.review_agreement", raise_exception=True)
@require_GET
def drift(request: AuthenticatedHttpRequest) -> HttpResponse:
    report = drift_report()
    rows = [
        {"week": week, "psi": [(MEASURES[m], week.psi[m]) for m in MEASURES]}
        for week in reversed(report.weeks)
    ]
    ctx = {"report": report, "rows": rows, "measures": MEASURES.values()}
    return render(request, "grading/drift.html", ctx)


urlpatterns = [path("drift", drift, name="drift")]
