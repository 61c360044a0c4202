"""Image timeline, agreement review (model vs confirmed grades, graders vs confirmed grades), charts
and CSV exports."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import path
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.text import get_valid_filename
from django.views.decorators.http import require_GET

from grading.forms.review import GraderAgreementForm, PredictionExportForm, ReviewFilterForm
from grading.http import AuthenticatedHttpRequest
from grading.models import Image, ModelVersion
from grading.pagination import sliced_rows_page
from grading.review_charts import confusion_png, qwk_by_month_png
from grading.selectors import exports as export_selectors
from grading.selectors import review as review_selectors
from grading.selectors.assistance import images_blind_for, images_read_independently_by
from grading.selectors.review import ReviewFilters, Scale
from grading.selectors.review_cache import review_cached
from grading.selectors.timeline import image_timeline
from grading.views.access import permission_required

REVIEW_PAGE_SIZE = 50

# Table columns: (sort key, heading, first-click direction). Dates and differences read best newest /
# largest first.
REVIEW_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("image", "Image", "asc"),
    ("patient", "Patient", "asc"),
    ("uploaded", "Uploaded", "desc"),
    ("predicted_at", "Predicted", "desc"),
    ("confirmed", "Confirmed grade", "asc"),
    ("predicted", "Predicted grade", "asc"),
    ("disagreement", "Difference", "desc"),
)


# ---------------------------------------------------------------------------------------------
# Filters


def _review_form(request: AuthenticatedHttpRequest, scale: Scale) -> ReviewFilterForm:
    form = ReviewFilterForm(request.GET, scale=scale)
    form.is_valid()
    return form


def _sort_headers(request: AuthenticatedHttpRequest, current: str) -> list[dict[str, str]]:
    headers = []
    for key, label, first in REVIEW_COLUMNS:
        if current == key:
            next_sort, aria = f"-{key}", "ascending"
        elif current == f"-{key}":
            next_sort, aria = key, "descending"
        else:
            next_sort, aria = (f"-{key}" if first == "desc" else key), "none"
        params = request.GET.copy()
        params["sort"] = next_sort
        params.pop("page", None)
        headers.append({"key": key, "label": label, "query": params.urlencode(), "aria_sort": aria})
    return headers


def _confusion_rows(report: dict[str, Any], scale: Scale) -> list[dict[str, Any]]:
    """The confusion matrix as table rows, each cell with its share of the row (for the heat map)."""
    rows = []
    for i, (level, counts) in enumerate(zip(scale.levels, report["confusion"], strict=True)):
        total = sum(counts)
        cells = [
            {
                "count": count,
                "share": round(count / total * 100) if total else 0,
                "diagonal": i == j,
            }
            for j, count in enumerate(counts)
        ]
        rows.append({"level": level, "total": total, "cells": cells})
    return rows


# ---------------------------------------------------------------------------------------------
# Pages


@require_GET
@permission_required("grading.view_image", raise_exception=True)
def image_detail(request: AuthenticatedHttpRequest, image_id: int) -> HttpResponse:
    try:
        timeline = image_timeline(image_id=image_id, viewer=request.user)
    except Image.DoesNotExist:
        raise Http404("No such image.") from None
    ctx = {"timeline": timeline, "image": timeline.image}
    return render(request, "grading/review/image_detail.html", ctx)


@require_GET
@permission_required("grading.review_agreement", raise_exception=True)
def review(request: AuthenticatedHttpRequest) -> HttpResponse:
    scale = review_selectors.scale_get()
    form = _review_form(request, scale)
    # htmx swaps in the results only; a history restore (back button with a cold cache) or a
    # plain GET gets the whole page.
    partial = bool(
        request.htmx and not request.htmx.boosted and not request.htmx.history_restore_request
    )
    template = "grading/review/_results.html" if partial else "grading/review/review.html"
    if not form.is_valid():
        response = render(request, template, {"form": form, "invalid": True}, status=400)
        patch_vary_headers(response, ("HX-Request",))
        return response
    filters = form.filters()
    summary = review_selectors.review_summary(filters=filters, scale=scale)
    report = summary["report"]
    rows = review_selectors.ReviewRows(filters=filters, scale=scale, report=report)
    page = sliced_rows_page(rows, REVIEW_PAGE_SIZE, request.GET.get("page"))
    chart_query = request.GET.copy()
    for key in ("page", "sort"):
        chart_query.pop(key, None)
    ctx = {
        "form": form,
        "filters": filters,
        "page": page,
        "report": report,
        "confusion_rows": _confusion_rows(report, scale) if report else [],
        "scale": scale,
        "sort_headers": _sort_headers(request, filters.sort),
        "not_compared": summary["not_compared"],
        "series": summary["series"],
        "chart_query": chart_query.urlencode(),
        "can_export": request.user.has_perm("grading.export_data"),
    }
    response = render(request, template, ctx)
    patch_vary_headers(response, ("HX-Request",))
    return response


def _png_response(data: bytes) -> HttpResponse:
    response = HttpResponse(data, content_type="image/png")
    response["Cache-Control"] = "private, no-cache"
    return response


def _chart_filters(request: AuthenticatedHttpRequest) -> tuple[Scale, ReviewFilters | None]:
    """The scale and the review page's filters for one of its charts; None if they are invalid."""
    scale = review_selectors.scale_get()
    form = _review_form(request, scale)
    return scale, (form.filters() if form.is_valid() else None)


def _invalid_filters() -> HttpResponse:
    return HttpResponse("Invalid filters.", status=400, content_type="text/plain")


@require_GET
@permission_required("grading.review_agreement", raise_exception=True)
def review_confusion_png(request: AuthenticatedHttpRequest) -> HttpResponse:
    scale, filters = _chart_filters(request)
    if filters is None:
        return _invalid_filters()
    report = review_selectors.review_summary(filters=filters, scale=scale)["report"]
    if report is None:
        raise Http404("No compared predictions for these filters.")
    labels = [f"{level.value} {level.name}" for level in scale.levels]
    # Drawing takes longer than counting: the picture is cached with the numbers it shows.
    png = review_cached(
        "confusion_png",
        review_selectors.review_filters_key(filters, scale),
        lambda: confusion_png(matrix=report["confusion"], labels=labels),
    )
    return _png_response(png)


@require_GET
@permission_required("grading.review_agreement", raise_exception=True)
def review_qwk_chart_png(request: AuthenticatedHttpRequest) -> HttpResponse:
    scale, filters = _chart_filters(request)
    if filters is None:
        return _invalid_filters()
    series = review_selectors.review_summary(filters=filters, scale=scale)["series"]
    png = review_cached(
        "qwk_png",
        review_selectors.review_filters_key(filters, scale),
        lambda: qwk_by_month_png(series=series),
    )
    return _png_response(png)


@require_GET
@permission_required("grading.review_agreement", raise_exception=True)
def grader_agreement(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = GraderAgreementForm(request.GET)
    if not form.is_valid():
        return render(request, "grading/review/graders.html", {"form": form}, status=400)
    reference: Literal["final", "independent"] = form.cleaned_data["reference"] or "final"
    ctx = {
        "form": form,
        "reference": reference,
        "graders": review_selectors.grader_agreement(
            reference=reference,
            date_from=form.cleaned_data["date_from"],
            date_to=form.cleaned_data["date_to"],
        ),
        "referable_from": review_selectors.scale_get().referable_from,
    }
    return render(request, "grading/review/graders.html", ctx)


# ---------------------------------------------------------------------------------------------
# CSV exports


class _Echo:
    """A file-like object whose write() returns the line, so csv.writer can format one row at a
    time for a streaming response (Django's documented pattern)."""

    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    for row in rows:
        yield writer.writerow(row)


def _csv_response(rows: Iterable[Sequence[Any]], filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(csv_lines(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    return response


def _stamp() -> str:
    return timezone.now().strftime("%Y%m%d-%H%M")


@require_GET
@permission_required("grading.export_data", raise_exception=True)
def export_grades_csv(request: AuthenticatedHttpRequest) -> StreamingHttpResponse:
    rows = export_selectors.grades_export_rows(
        hidden_images=images_read_independently_by(user=request.user)
    )
    return _csv_response(rows, f"funduscope-grades-{_stamp()}.csv")


@require_GET
@permission_required("grading.export_data", raise_exception=True)
def export_predictions_csv(
    request: AuthenticatedHttpRequest,
) -> HttpResponse | StreamingHttpResponse:
    form = PredictionExportForm(request.GET)
    if not form.is_valid():
        errors = "; ".join(str(error) for errors in form.errors.values() for error in errors)
        return HttpResponse(errors, status=400, content_type="text/plain")
    version_id = form.cleaned_data["version"]
    version = get_object_or_404(ModelVersion, pk=version_id) if version_id else None
    include_training = form.cleaned_data["include_training"]
    suffix = f"-{version.name}" if version else ""
    suffix += "-with-training-images" if include_training else ""
    response = _csv_response(
        export_selectors.predictions_export_rows(
            model_version=version,
            include_training=include_training,
            hidden_images=images_blind_for(user=request.user),
        ),
        get_valid_filename(f"funduscope-predictions{suffix}-{_stamp()}.csv"),
    )
    # Predictions of images their version was trained on are left out by default; say how many.
    response["X-Training-Images-Excluded"] = (
        0
        if include_training
        else export_selectors.predictions_export_training_excluded(model_version=version)
    )
    return response


urlpatterns = [
    path("images/<int:image_id>/", image_detail, name="image_detail"),
    path("review/", review, name="review"),
    path("review/confusion.png", review_confusion_png, name="review_confusion_png"),
    path("review/qwk-by-month.png", review_qwk_chart_png, name="review_qwk_chart_png"),
    path("review/graders/", grader_agreement, name="grader_agreement"),
    path("export/grades.csv", export_grades_csv, name="export_grades_csv"),
    path("export/predictions.csv", export_predictions_csv, name="export_predictions_csv"),
]
