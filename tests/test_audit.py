"""The audit trail records every change that matters, with who made it, in one place admins read:
grading settings, model activation and rollback, retrain requests and jobs, adjudications, admin
edits, accounts and roles. The confirmed grade cannot be edited in the Django admin."""

from __future__ import annotations

import tempfile
from pathlib import Path

from auditlog.models import LogEntry
from django.contrib.auth.models import Group, User
from django.urls import reverse

from grading.models import Image, Job, ModelVersion, WorkbenchSettings
from grading.services import model_versions as version_services
from grading.services.audit import audit_actor
from tests.factories import image_make
from tests.factories_grading import GradingTestCase, grade_give, workbench_set
from tests.factories_jobs import model_version_make


def entries_for(model) -> list[LogEntry]:
    return list(LogEntry.objects.get_for_model(model).order_by("timestamp", "id"))


class AuditTrailTests(GradingTestCase):
    def test_a_settings_change_records_who_and_what(self):
        self.login(self.adam)
        self.client.post(
            reverse("workbench_settings"),
            {
                "grades_required": "2",
                "blind_first_grader": "on",
                "queue_order": "random",
                "claim_minutes": "10",
                "auto_retrain_after": "0",
            },
        )
        entry = entries_for(WorkbenchSettings)[-1]
        self.assertEqual(entry.actor, self.adam)
        self.assertEqual(entry.changes_dict["grades_required"], ["1", "2"])
        self.assertEqual(entry.changes_dict["queue_order"], ["oldest", "random"])

    def test_activation_and_rollback_record_who_and_which(self):
        folder = Path(tempfile.mkdtemp(prefix="funduscope-audit-"))
        v1 = model_version_make("v1", artifact_dir=folder / "v1")
        v2 = model_version_make("v2", artifact_dir=folder / "v2")
        version_services.model_version_activate(version=v1, user=self.adam)
        version_services.model_version_activate(version=v2, user=self.adam)
        version_services.model_version_rollback(user=self.rita)
        v1.refresh_from_db()
        self.assertEqual(v1.activated_by, self.rita)
        entries = [
            entry
            for entry in entries_for(ModelVersion)
            if "state" in (entry.changes_dict or {}) and entry.changes_dict["state"][1] == "active"
        ]
        self.assertEqual(
            [(e.object_repr, e.actor, (e.additional_data or {}).get("note")) for e in entries],
            [
                ("v1", self.adam, "activation"),
                ("v2", self.adam, "activation"),
                ("v1", self.rita, "rollback"),
            ],
        )

    def test_a_retrain_request_records_who_asked(self):
        with audit_actor(self.adam):
            Job.objects.create(kind=Job.Kind.MODEL_TRAIN, created_by=self.adam)
        entry = entries_for(Job)[-1]
        self.assertEqual((entry.action, entry.actor), (LogEntry.Action.CREATE, self.adam))

    def test_an_adjudication_is_recorded_with_its_reviewer(self):
        workbench_set(grades_required=2)
        image = image_make()
        grade_give(image, self.alice, 1)
        grade_give(image, self.bob, 3)
        self.login(self.rita)
        self.client.post(reverse("adjudicate", args=[image.pk]), {"grade": "2"})
        creations = [
            e for e in LogEntry.objects.filter(actor=self.rita, action=LogEntry.Action.CREATE)
        ]
        self.assertTrue(any("adjudication" in str(e.changes_dict.get("kind")) for e in creations))

    def test_account_and_role_changes_are_recorded(self):
        with audit_actor(self.adam):
            self.nora.groups.add(Group.objects.get(name="reviewer"))
        entry = LogEntry.objects.get_for_object(self.nora).latest("timestamp")
        self.assertEqual(entry.actor, self.adam)
        self.assertIn("reviewer", str(entry.changes))
        self.assertNotIn("password", str(entry.changes))

    def test_admins_read_the_trail_and_others_do_not(self):
        workbench_set(grades_required=2)
        self.assertStatusByUser(reverse("audit_trail"), adam=200, rita=403, alice=403)
        self.login(self.adam)
        self.assertContains(self.client.get(reverse("audit_trail")), "Workbench settings")


class AdminConfirmedGradeTests(GradingTestCase):
    def test_the_confirmed_grade_is_read_only_in_the_django_admin(self):
        superuser = User.objects.create_superuser("root", "root@example.org", "secret-pass-123")
        image = image_make(confirmed_grade=1)
        self.client.force_login(superuser)
        url = reverse("admin:grading_image_change", args=[image.pk])
        page = self.client.get(url)
        self.assertNotContains(page, 'name="confirmed_grade"')
        self.client.post(
            url,
            {
                "patient": image.patient_id,
                "eye": "L",
                "file": "",
                "original_filename": "x.jpg",
                "source": "edited",
                "confirmed_grade": "4",
                "grades-TOTAL_FORMS": "0",
                "grades-INITIAL_FORMS": "0",
            },
        )
        image.refresh_from_db()
        self.assertEqual(image.confirmed_grade_id, 1)
        # The edit that did go through is in the trail, with its author.
        entry = LogEntry.objects.get_for_object(image).latest("timestamp")
        self.assertEqual(entry.actor, superuser)
        self.assertEqual(image.grading_state, Image.GradingState.CONFIRMED)


class AuditTextTests(GradingTestCase):
    def test_a_creation_lists_the_values_it_set_and_an_update_old_and_new(self):
        from grading.selectors.audit import audit_changes_text

        with audit_actor(self.adam):
            image = image_make()
            Image.objects.get(pk=image.pk).save()  # no change: no entry
            image.eye = "L"
            image.save()
        created, updated = LogEntry.objects.get_for_object(image).order_by("timestamp", "id")
        created_text = audit_changes_text(created)
        self.assertIn("eye: R", created_text)
        self.assertNotIn("None", created_text)
        self.assertNotIn("grades", created_text)
        self.assertEqual(audit_changes_text(updated), "eye: R → L")
