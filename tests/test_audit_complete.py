"""The audit trail is complete (issue 20): an edit of any model registered in the Django admin
leaves an entry naming the admin; so do API tokens, password changes and background jobs."""

from __future__ import annotations

from typing import Any

from auditlog.models import LogEntry
from django import forms
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.test import RequestFactory
from django.urls import reverse
from rest_framework.authtoken.models import Token, TokenProxy

from grading.models import (
    CertificationItem,
    GradeLevel,
    Image,
    Job,
    ModelVersion,
    Patient,
    Prediction,
)
from grading.tasks import images_import
from tests.factories import image_make
from tests.factories_grading import GradingTestCase, model_version_active_make, prediction_make


def _form_data(form: forms.ModelForm) -> dict[str, Any]:
    """What the admin's change form would post back unchanged."""
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        if field.disabled:
            continue
        value = form[name].value()
        widget = field.widget
        if isinstance(widget, forms.MultiWidget):
            for index, part in enumerate(widget.decompress(value)):
                data[f"{name}_{index}"] = "" if part is None else part
        elif isinstance(field, forms.BooleanField):
            if value:
                data[name] = "on"
        elif isinstance(value, list | tuple):
            data[name] = [str(v) for v in value]
        elif isinstance(field, forms.JSONField):
            data[name] = field.prepare_value(value)
        else:
            data[name] = "" if value is None else value
    return data


class AdminEditsAreAuditedTests(GradingTestCase):
    def setUp(self):
        self.root = User.objects.create_superuser("root", "root@example.org", "secret-pass-123")
        self.client.force_login(self.root)
        image = image_make()
        version = model_version_active_make()
        # One object per model the admin may change, and the edit made to it.
        self.edits = {
            GradeLevel: (GradeLevel.objects.get(value=2), {"name": "Moderate (edited)"}),
            Patient: (image.patient, {"notes": "edited in the admin"}),
            Image: (image, {"original_filename": "edited.jpg"}),
            ModelVersion: (version, {"preprocessing": "clahe"}),
            Prediction: (
                prediction_make(
                    image=image_make(confirmed_grade=0),  # not withheld from the admin
                    version=version,
                    probabilities=[0.7, 0.3, 0, 0, 0],
                ),
                {"in_training": "on"},
            ),
            Job: (Job.objects.create(kind=Job.Kind.MODEL_TRAIN), {"state": "cancelled"}),
            CertificationItem: (
                CertificationItem.objects.create(
                    image=image_make(confirmed_grade=1),
                    reference_grade=GradeLevel.objects.get(value=1),
                ),
                {"reference_grade": "3"},
            ),
            User: (self.nora, {"first_name": "Nora"}),
            Group: (Group.objects.get(name="reviewer"), {"name": "reviewers"}),
        }

    def _edit(self, model: type, model_admin: admin.ModelAdmin, obj: Any, change: dict) -> None:
        request = RequestFactory().get("/")
        request.user = self.root
        form = model_admin.get_form(request, obj, change=True)(instance=obj)
        data = _form_data(form) | change
        for inline in model_admin.get_inline_instances(request, obj):
            prefix = inline.get_formset(request, obj).get_default_prefix()
            data |= {f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"}
        url = reverse(
            f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[obj.pk]
        )
        response = self.client.post(url, data)
        errors = response.context["adminform"].form.errors if response.status_code == 200 else ""
        self.assertEqual(response.status_code, 302, f"{model.__name__}: {errors}")
        changelist = f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"
        self.assertEqual(response.url, reverse(changelist), model.__name__)

    def test_every_model_in_the_admin_is_audited_or_not_editable_there(self):
        request = RequestFactory().get("/")
        request.user = self.root
        for model, model_admin in admin.site._registry.items():
            with self.subTest(model=model.__name__):
                if model in self.edits:
                    obj, change = self.edits[model]
                    before = LogEntry.objects.count()
                    self._edit(model, model_admin, obj, change)
                    entry = LogEntry.objects.get_for_object(obj).order_by("-id").first()
                    self.assertGreater(LogEntry.objects.count(), before)
                    self.assertIsNotNone(entry)
                    self.assertEqual(entry.actor, self.root)
                    self.assertIn(next(iter(change)), entry.changes_dict)
                elif model is TokenProxy:
                    continue  # creation: test_creating_an_api_token_in_the_admin_is_audited
                else:
                    self.assertFalse(model_admin.has_change_permission(request), model)
                    self.assertFalse(model_admin.has_add_permission(request), model)

    def test_creating_an_api_token_in_the_admin_is_audited(self):
        url = reverse("admin:authtoken_tokenproxy_add")
        response = self.client.post(url, {"user": self.alice.pk})
        self.assertEqual(response.status_code, 302)
        token = Token.objects.get(user=self.alice)
        entry = LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(Token)
        ).latest("id")
        self.assertEqual((entry.actor, entry.action), (self.root, LogEntry.Action.CREATE))
        self.assertIn("alice", entry.object_repr)
        self.assertNotIn(token.key, f"{entry.object_repr} {entry.object_pk} {entry.changes}")


class PasswordAndJobAuditTests(GradingTestCase):
    def test_a_password_change_is_recorded_without_the_hash(self):
        self.login(self.alice)
        response = self.client.post(
            reverse("password_change"),
            {
                "old_password": "secret-pass-123",
                "new_password1": "tangerine-harbour-71",
                "new_password2": "tangerine-harbour-71",
            },
        )
        self.assertEqual(response.status_code, 302)
        entry = LogEntry.objects.get_for_object(self.alice).latest("id")
        self.assertEqual(entry.actor, self.alice)
        self.assertEqual(entry.changes_dict, {"password": ["–", "changed"]})
        self.alice.refresh_from_db()
        self.assertNotIn(self.alice.password, str(LogEntry.objects.values_list("changes")))

    def test_a_background_import_names_the_user_who_started_it(self):
        import tempfile
        from pathlib import Path

        from tests.factories import fundus_jpeg_bytes

        folder = Path(tempfile.mkdtemp(prefix="funduscope-import-"))
        for index in range(2):
            (folder / f"{index:05d}").write_bytes(fundus_jpeg_bytes(seed=900 + index))
        job = Job.objects.create(
            kind=Job.Kind.IMAGES_IMPORT,
            created_by=self.adam,
            celery_task_id="audit-import-1",
            params={
                "folder": str(folder),
                "names": ["a.jpg", "b.jpg"],
                "patient_id": "P-AUDIT",
                "eye": "R",
                "acquired_on": None,
            },
        )
        images_import.apply(args=[job.pk], task_id="audit-import-1")
        job.refresh_from_db()
        self.assertEqual(job.state, Job.State.SUCCEEDED, job.error)
        created = LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(Image), action=LogEntry.Action.CREATE
        )
        self.assertEqual(created.count(), 2)
        self.assertEqual({entry.actor for entry in created}, {self.adam})


class AccountUnlockAuditTests(GradingTestCase):
    def test_unlocking_an_account_in_the_admin_is_audited(self):
        from axes.models import AccessAttempt

        root = User.objects.create_superuser("root", "root@example.org", "secret-pass-123")
        self.client.force_login(root)
        attempt = AccessAttempt.objects.create(
            username="alice", ip_address="10.0.0.9", failures_since_start=5
        )
        url = reverse("admin:axes_accessattempt_delete", args=[attempt.pk])
        self.assertEqual(self.client.post(url, {"post": "yes"}).status_code, 302)
        self.assertFalse(AccessAttempt.objects.exists())
        entry = LogEntry.objects.filter(action=LogEntry.Action.DELETE).latest("id")
        self.assertEqual((entry.actor, entry.object_pk), (root, str(attempt.pk)))
