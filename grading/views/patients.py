"""Patients: the searchable list and each patient's timeline per eye."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import path
from django.views.decorators.http import require_GET

from grading.forms.patients import PatientSearchForm
from grading.http import AuthenticatedHttpRequest
from grading.models import GradeLevel, Patient
from grading.pagination import page_number
from grading.selectors import certification as certification_selectors
from grading.selectors import patients as patient_selectors
from grading.views.access import GRADE_PERMISSION, VIEW_PATIENT_PERMISSION, permission_required

PATIENTS_PAGE_SIZE = 25


@require_GET
@permission_required(VIEW_PATIENT_PERMISSION, raise_exception=True)
def patients(request: AuthenticatedHttpRequest) -> HttpResponse:
    search = PatientSearchForm(request.GET)
    query = search.cleaned_data["q"].strip() if search.is_valid() else ""
    page = Paginator(patient_selectors.patients_search(query=query), PATIENTS_PAGE_SIZE).get_page(
        page_number(request)
    )
    statuses = patient_selectors.patients_referable_status(
        patient_ids=[patient.pk for patient in page],
        hidden_image_ids=certification_selectors.reference_hidden_ids(user=request.user),
    )
    patients_counted = patient_selectors.patients_with_counts(patients=page)
    ctx = {
        "query": query,
        "page": page,
        "rows": [(patient, statuses[patient.pk]) for patient in patients_counted],
    }
    return render(request, "grading/grading/patients.html", ctx)


@require_GET
@permission_required(VIEW_PATIENT_PERMISSION, raise_exception=True)
def patient_detail(request: AuthenticatedHttpRequest, patient_id: int) -> HttpResponse:
    patient = get_object_or_404(Patient, pk=patient_id)
    hidden = certification_selectors.reference_hidden_ids(user=request.user)
    ctx = {
        "patient": patient,
        "timelines": patient_selectors.patient_eyes_timeline(
            patient=patient, hidden_image_ids=hidden
        ),
        "status": patient_selectors.patient_referable_status(
            patient=patient, hidden_image_ids=hidden
        ),
        "referable_from": GradeLevel.objects.filter(is_referable=True).order_by("value").first(),
        "can_grade": request.user.has_perm(GRADE_PERMISSION),
    }
    return render(request, "grading/grading/patient_detail.html", ctx)


urlpatterns = [
    path("patients/", patients, name="patients"),
    path("patients/<int:patient_id>/", patient_detail, name="patient_detail"),
]
