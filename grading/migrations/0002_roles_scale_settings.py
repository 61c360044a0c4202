"""Create the grade scale (from FUNDUS_GRADE_SCALE), the three roles and the settings row."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations

ROLE_PERMISSIONS = {
    "clinician": [
        "grade_image",
        "upload_image",
        "view_image",
        "view_patient",
        "add_patient",
        "view_grade",
        "view_prediction",
        "view_modelversion",
    ],
    "reviewer": [
        "adjudicate_image",
        "review_agreement",
        "export_data",
        "view_image",
        "view_patient",
        "view_grade",
        "view_prediction",
        "view_modelversion",
        "view_job",
    ],
    "admin": [
        "grade_image",
        "upload_image",
        "adjudicate_image",
        "review_agreement",
        "export_data",
        "retrain_model",
        "activate_model",
        "manage_jobs",
        "view_image",
        "view_patient",
        "add_patient",
        "change_patient",
        "view_grade",
        "view_prediction",
        "view_modelversion",
        "view_job",
        "change_workbenchsettings",
        "view_workbenchsettings",
    ],
}


def forwards(apps, schema_editor):
    from grading.scale import grade_scale_parse

    GradeLevel = apps.get_model("grading", "GradeLevel")
    for level in grade_scale_parse(settings.FUNDUS_GRADE_SCALE):
        GradeLevel.objects.update_or_create(
            value=level.value, defaults={"name": level.name, "is_referable": level.is_referable}
        )

    # Permissions are normally created after all migrations; roles need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        permissions = Permission.objects.filter(
            content_type__app_label="grading", codename__in=codenames
        )
        missing = set(codenames) - set(permissions.values_list("codename", flat=True))
        if missing:
            raise RuntimeError(f"Permissions missing for role {role}: {sorted(missing)}")
        group.permissions.set(permissions)

    WorkbenchSettings = apps.get_model("grading", "WorkbenchSettings")
    if not WorkbenchSettings.objects.exists():
        WorkbenchSettings.objects.create()


def backwards(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLE_PERMISSIONS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("grading", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
