"""Read-only JSON API for integration, mounted at ``/api/``.

Authentication: a token (``Authorization: Token <key>``; create one with
``manage.py drf_create_token <username>``) or the browser session. DRF class views opt out of
Django's LoginRequiredMiddleware themselves (``login_required = False``) and answer 401 instead of
redirecting to the login page. Reading needs the same ``view_*`` permissions as the pages.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.db.models import Prefetch, QuerySet
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.urls import path
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.routers import APIRootView
from rest_framework.views import APIView

from grading.http import AuthenticatedRequest
from grading.models import Grade, GradeLevel, Image, ModelVersion, Patient, Prediction
from grading.pagination import IdsFirstPaginator
from grading.selectors.assistance import images_blind_for, images_read_independently_by
from grading.selectors.fhir import image_fhir_bundle, patient_fhir_bundle
from grading.selectors.model_versions import model_version_active
from grading.serializers import (
    GradeSerializer,
    ImageSerializer,
    ModelVersionSerializer,
    PredictionListParams,
    PredictionSerializer,
)
from grading.views.access import PermissionRequired
from grading.views.errors import permission_denied

# Predictions next to confirmed grades are a reviewer's view: a clinician reading them through the
# API would defeat blind grading, so the API needs the review permission as well.
READ_PREDICTIONS = ("grading.view_image", "grading.view_prediction", "grading.review_agreement")


class ApiPagination(PageNumberPagination):
    """Page size from REST_FRAMEWORK["PAGE_SIZE"]; a client may ask for up to 1000 per page."""

    django_paginator_class = IdsFirstPaginator
    page_size_query_param = "page_size"
    max_page_size = 1000


class HasViewPermissions(BasePermission):
    """The view names the model permissions it needs (``required_permissions``)."""

    message = "Your account has no permission to read this data."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return request.user.has_perms(getattr(view, "required_permissions", ()))


def _grade_param(request: Request, name: str) -> int | None:
    """A grade value of the scale from the query string, parsed by a serializer field (400 with
    the known grades otherwise)."""
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    known = list(GradeLevel.objects.values_list("value", flat=True))
    field = serializers.ChoiceField(choices=[(str(value), str(value)) for value in known])
    try:
        return int(field.run_validation(raw))
    except ValidationError:
        listed = ", ".join(str(value) for value in known)
        raise ValidationError(
            {name: f"{raw[:40]!r} is not a grade of the scale ({listed})."}
        ) from None


def _blind_images(request: AuthenticatedRequest) -> QuerySet[Image, Any]:
    """Images whose predictions this reader may not see yet (blind reading)."""
    return images_blind_for(user=request.user).values("pk")


class ImageFilterSerializer(serializers.Serializer):
    """The image list's filters (``confirmed_grade`` is checked against the scale separately)."""

    grading_state = serializers.ChoiceField(
        choices=Image.GradingState.values, required=False, allow_blank=True
    )
    # A pseudonym is at most 64 characters; a NUL byte is refused (PostgreSQL cannot store it).
    patient = serializers.CharField(required=False, allow_blank=True, max_length=64)


class ReadOnlyApiView(generics.GenericAPIView):
    permission_classes = [IsAuthenticated, HasViewPermissions]
    pagination_class = ApiPagination
    request: AuthenticatedRequest  # IsAuthenticated: a method that runs has a saved user


class ApiRoot(APIRootView):
    """The endpoints of this read-only API. Authenticate with a token (``Authorization: Token
    <key>``) or a browser session; reading needs the reviewer or admin role."""

    permission_classes = [IsAuthenticated, HasViewPermissions]
    required_permissions = READ_PREDICTIONS
    api_root_dict = {"images": "api_images", "model_versions": "api_model_versions"}

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().get(request, *args, **kwargs)
        versions = reverse("api_model_versions", request=request)
        response.data["model_version_predictions"] = f"{versions}{{name}}/predictions/"
        response.data["parameters"] = {
            "images": "grading_state, confirmed_grade, patient, version (the model version whose"
            " prediction is shown; default: the active one), page, page_size",
            "model_version_predictions": "predicted_grade, page, page_size",
        }
        return response


class ModelVersionNameField(serializers.SlugRelatedField):
    """A model version by name. A NUL byte is no version's name (and PostgreSQL refuses to
    compare text with one, which would be a 500)."""

    def to_internal_value(self, data: Any) -> ModelVersion:
        if isinstance(data, str) and "\x00" in data:
            self.fail("does_not_exist", slug_name=self.slug_field, value=data.replace("\x00", ""))
        return super().to_internal_value(data)


class PredictionVersionQuery(serializers.Serializer):
    version = ModelVersionNameField(
        slug_field="name",
        queryset=ModelVersion.objects.all(),
        required=False,
        error_messages={"does_not_exist": "There is no model version named {value}."},
    )


class ImagePredictionApiView(ReadOnlyApiView):
    """An image's prediction comes from the active model version, or from ``?version=<name>``:
    the newest prediction of any version may come from a retired model."""

    def prediction_version(self) -> ModelVersion | None:
        if not hasattr(self, "_prediction_version"):
            query = PredictionVersionQuery(data=self.request.query_params)
            query.is_valid(raise_exception=True)
            self._prediction_version = query.validated_data.get("version") or model_version_active()
        return self._prediction_version

    def images_with_prediction(self) -> QuerySet[Image]:
        version = self.prediction_version()
        # A pending image the reader may still grade has no prediction for them (blind reading).
        predictions = (
            Prediction.objects.filter(model_version=version)
            .exclude(image__in=_blind_images(self.request))
            .select_related("model_version")
        )
        return Image.objects.select_related("patient").prefetch_related(
            Prefetch("predictions", queryset=predictions, to_attr="predictions_of_version")
        )

    def get_serializer_context(self) -> dict[str, Any]:
        return {
            **super().get_serializer_context(),
            "prediction_version": self.prediction_version(),
        }


class ImageList(ImagePredictionApiView, generics.ListAPIView):
    """Images with their confirmed grade and the active model version's prediction
    (``latest_prediction``; ``?version=<name>`` asks for another version's).

    Filters: ``grading_state`` (pending | adjudication | confirmed), ``confirmed_grade`` (a grade
    value), ``patient`` (pseudonym).
    """

    serializer_class = ImageSerializer
    required_permissions = READ_PREDICTIONS

    def get_queryset(self) -> QuerySet[Image]:
        queryset = self.images_with_prediction().order_by("id")
        filters = ImageFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        state = filters.validated_data.get("grading_state")
        if state:
            queryset = queryset.filter(grading_state=state)
        grade = _grade_param(self.request, "confirmed_grade")
        if grade is not None:
            queryset = queryset.filter(confirmed_grade_id=grade)
        patient = filters.validated_data.get("patient")
        if patient:
            queryset = queryset.filter(patient__pseudonym=patient)
        return queryset


class ImageDetail(ImagePredictionApiView, generics.RetrieveAPIView):
    serializer_class = ImageSerializer
    required_permissions = READ_PREDICTIONS
    lookup_url_kwarg = "image_id"

    def get_queryset(self) -> QuerySet[Image]:
        return self.images_with_prediction()


class ImageGrades(ReadOnlyApiView, generics.ListAPIView):
    """Every grade of one image, oldest first, with its lesion findings (reviewers and admins
    only, like the rest of the API: reference grades never reach a clinician this way)."""

    serializer_class = GradeSerializer
    required_permissions = READ_PREDICTIONS

    def get_queryset(self) -> QuerySet[Grade]:
        image = get_object_or_404(Image, pk=self.kwargs["image_id"])
        if images_read_independently_by(user=self.request.user).filter(pk=image.pk).exists():
            # An admin who may still grade this image reads it independently: no other grades.
            return Grade.objects.none()
        return (
            Grade.objects.filter(image=image).select_related("grader").order_by("created_at", "id")
        )


class FhirRenderer(JSONRenderer):
    media_type = "application/fhir+json"
    format = "fhir"


class ImageFhir(ReadOnlyApiView):
    """The photograph's report as a FHIR R4 Bundle (DiagnosticReport, an Observation for the eye,
    the model's prediction as its own Observation), within what this reader may see."""

    required_permissions = READ_PREDICTIONS
    renderer_classes = [FhirRenderer, JSONRenderer]

    def get(self, request: Request, image_id: int) -> Response:
        image = get_object_or_404(Image, pk=image_id)
        return Response(image_fhir_bundle(image=image, user=self.request.user))


class PatientPseudonymSerializer(serializers.Serializer):
    # A pseudonym is at most 64 characters; a NUL byte is refused (PostgreSQL cannot store it).
    pseudonym = serializers.CharField(max_length=64)


class PatientFhir(ReadOnlyApiView):
    """Every visit of one patient (by pseudonym) as a FHIR R4 Bundle."""

    required_permissions = READ_PREDICTIONS
    renderer_classes = [FhirRenderer, JSONRenderer]

    def get(self, request: Request, pseudonym: str) -> Response:
        params = PatientPseudonymSerializer(data={"pseudonym": pseudonym})
        if not params.is_valid():
            raise Http404("No such patient.")
        patient = get_object_or_404(Patient, pseudonym=params.validated_data["pseudonym"])
        return Response(patient_fhir_bundle(patient=patient, user=self.request.user))


class ModelVersionList(ReadOnlyApiView, generics.ListAPIView):
    serializer_class = ModelVersionSerializer
    # Versions carry hold-out metrics: a reviewer's view, like predictions (README: 403 for
    # clinicians).
    required_permissions = ("grading.view_modelversion", "grading.review_agreement")
    queryset = ModelVersion.objects.order_by("-created_at", "-id")


class ModelVersionPredictions(ReadOnlyApiView, generics.ListAPIView):
    """Predictions of one model version (by name), oldest first; ``predicted_grade`` filters.

    Images the version was trained on are left out unless ``include_training=true`` (their
    agreement with the confirmed grade is optimistic); the response says how many were left
    out (``training_images_excluded``)."""

    serializer_class = PredictionSerializer
    required_permissions = READ_PREDICTIONS

    def _params(self) -> dict[str, Any]:
        params = PredictionListParams(data=self.request.query_params)
        params.is_valid(raise_exception=True)
        return params.validated_data

    def _all_predictions(self) -> QuerySet[Prediction]:
        if not hasattr(self, "_version"):
            name = self.kwargs["name"]
            if "\x00" in name:  # no version has one, and PostgreSQL cannot compare it
                raise Http404("No such model version.")
            self._version = get_object_or_404(ModelVersion, name=name)
        version = self._version
        queryset = (
            Prediction.objects.filter(model_version=version)
            .exclude(image__in=_blind_images(self.request))
            .select_related("model_version", "image")
            .order_by("id")
        )
        grade = _grade_param(self.request, "predicted_grade")
        if grade is not None:
            queryset = queryset.filter(predicted_grade_id=grade)
        return queryset

    def get_queryset(self) -> QuerySet[Prediction]:
        queryset = self._all_predictions()
        if not self._params()["include_training"]:
            queryset = queryset.filter(in_training=False)
        return queryset

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().list(request, *args, **kwargs)
        excluded = (
            0
            if self._params()["include_training"]
            else self._all_predictions().filter(in_training=True).count()
        )
        response.data["training_images_excluded"] = excluded
        return response


def friendly_denial(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """A browser (it asks for HTML) that opens the API without the role gets the product's 403
    page, which names the role needed, instead of a bare JSON line; API clients keep the JSON."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        if response.status_code == 403 and "text/html" in request.META.get("HTTP_ACCEPT", ""):
            return permission_denied(request, PermissionRequired(READ_PREDICTIONS))
        return response

    return wrapped


urlpatterns = [
    path("", friendly_denial(ApiRoot.as_view()), name="api_root"),
    path("images/", friendly_denial(ImageList.as_view()), name="api_images"),
    path("images/<int:image_id>/", friendly_denial(ImageDetail.as_view()), name="api_image"),
    path(
        "images/<int:image_id>/grades/",
        friendly_denial(ImageGrades.as_view()),
        name="api_image_grades",
    ),
    path(
        "images/<int:image_id>/fhir/", friendly_denial(ImageFhir.as_view()), name="api_image_fhir"
    ),
    path(
        "patients/<str:pseudonym>/fhir/",
        friendly_denial(PatientFhir.as_view()),
        name="api_patient_fhir",
    ),
    path("model-versions/", friendly_denial(ModelVersionList.as_view()), name="api_model_versions"),
    path(
        "model-versions/<str:name>/predictions/",
        friendly_denial(ModelVersionPredictions.as_view()),
        name="api_model_version_predictions",
    ),
]
