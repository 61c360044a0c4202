"""JSON shapes of the read-only integration API (``/api/``)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from grading.models import Grade, Image, ModelVersion, Prediction


class PredictionSerializer(serializers.ModelSerializer):
    model_version = serializers.CharField(source="model_version.name")
    image = serializers.IntegerField(source="image_id")
    image_sha256 = serializers.CharField(source="image.sha256")
    predicted_grade = serializers.IntegerField(source="predicted_grade_id")
    confirmed_grade = serializers.IntegerField(source="image.confirmed_grade_id", allow_null=True)

    class Meta:
        model = Prediction
        fields = [
            "id",
            "image",
            "image_sha256",
            "model_version",
            "predicted_grade",
            "probabilities",
            "in_training",
            "confirmed_grade",
            "created_at",
        ]
        read_only_fields = fields


class LatestPredictionSerializer(serializers.ModelSerializer):
    model_version = serializers.CharField(source="model_version.name")
    predicted_grade = serializers.IntegerField(source="predicted_grade_id")

    class Meta:
        model = Prediction
        fields = [
            "id",
            "model_version",
            "predicted_grade",
            "probabilities",
            "in_training",
            "created_at",
        ]
        read_only_fields = fields


class ImageSerializer(serializers.ModelSerializer):
    patient = serializers.CharField(source="patient.pseudonym")
    confirmed_grade = serializers.IntegerField(source="confirmed_grade_id", allow_null=True)
    latest_prediction = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = [
            "id",
            "sha256",
            "patient",
            "eye",
            "acquired_on",
            "uploaded_at",
            "width",
            "height",
            "grading_state",
            "confirmed_grade",
            "confirmed_ungradable",
            "confirmed_macular_oedema",
            "confirmation_method",
            "confirmed_at",
            "latest_prediction",
        ]
        read_only_fields = fields

    def get_latest_prediction(self, image: Image) -> dict[str, Any] | None:
        """The prediction of the version the view chose (the active one unless ``?version=``
        named another); None when that version has not predicted the image or none is active."""
        predictions = getattr(image, "predictions_of_version", None)  # the view's Prefetch
        if predictions is None:
            version = self.context.get("prediction_version")
            if version is None:
                return None
            predictions = list(
                image.predictions.filter(model_version=version).select_related("model_version")
            )
        return LatestPredictionSerializer(predictions[0]).data if predictions else None


class PredictionListParams(serializers.Serializer):
    """Query parameters of a version's prediction list."""

    include_training = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Also list images the version was trained on (their agreement is optimistic).",
    )


class ModelVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "name",
            "state",
            "backbones",
            "preprocessing",
            "class_values",
            "metrics",
            "created_at",
            "trained_at",
            "activated_at",
        ]
        read_only_fields = fields


class GradeSerializer(serializers.ModelSerializer):
    """One grade with its lesion findings (mlcore.data.rubric.Findings.to_dict: only what was seen),
    the grade the findings give and the reason for an override."""

    image = serializers.IntegerField(source="image_id")
    grader = serializers.CharField(source="grader.username", allow_null=True, default=None)
    grade = serializers.IntegerField(source="grade_id", allow_null=True)
    derived_grade = serializers.IntegerField(source="derived_grade_id", allow_null=True)
    supersedes = serializers.IntegerField(source="supersedes_id", allow_null=True)

    class Meta:
        model = Grade
        fields = [
            "id",
            "image",
            "kind",
            "grader",
            "source",
            "grade",
            "ungradable",
            "macular_oedema",
            "notes",
            "rubric_used",
            "findings",
            "derived_grade",
            "override_reason",
            "counts_towards_confirmation",
            "supersedes",
            "created_at",
        ]
        read_only_fields = fields
