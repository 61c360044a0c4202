"""Honest numbers: each prediction knows whether its version was trained on its image; a version
records when its training finished; the cross-validation job kind."""

from __future__ import annotations

from django.db import migrations, models


def flag_training_predictions(apps, schema_editor) -> None:
    """Versions trained before this migration held out ``holdout_sha256`` and trained on every
    other image confirmed (gradable) when they were created: flag their predictions of those."""
    ModelVersion = apps.get_model("grading", "ModelVersion")
    Prediction = apps.get_model("grading", "Prediction")
    Job = apps.get_model("grading", "Job")
    for version in ModelVersion.objects.all():
        trained_on = Prediction.objects.filter(
            model_version=version,
            image__grading_state="confirmed",
            image__confirmed_ungradable=False,
            image__confirmed_grade__isnull=False,
            image__confirmed_at__lte=version.created_at,
        ).exclude(image__sha256__in=list(version.holdout_sha256 or []))
        trained_on.update(in_training=True)
        job = (
            Job.objects.filter(model_version=version, kind="model_train", finished_at__isnull=False)
            .order_by("-finished_at")
            .first()
        )
        if job is not None and version.trained_at is None:
            ModelVersion.objects.filter(pk=version.pk).update(trained_at=job.finished_at)


class Migration(migrations.Migration):
    dependencies = [
        ("grading", "0002_roles_scale_settings"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelversion",
            name="trained_at",
            field=models.DateTimeField(
                blank=True, help_text="When training finished (started: created_at).", null=True
            ),
        ),
        migrations.AddField(
            model_name="prediction",
            name="in_training",
            field=models.BooleanField(
                db_index=True,
                default=False,
                help_text="The model version was trained on this image.",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="kind",
            field=models.CharField(
                choices=[
                    ("features_extract", "Feature extraction"),
                    ("images_augment", "Augmentation"),
                    ("model_train", "Retraining"),
                    ("model_evaluate", "Cross-validation of a new version"),
                    ("predictions_refresh", "Batch prediction"),
                    ("images_predict", "Prediction of new uploads"),
                ],
                max_length=32,
            ),
        ),
        migrations.RunPython(flag_training_predictions, migrations.RunPython.noop),
    ]
