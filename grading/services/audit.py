"""The audit trail: who changed what that matters (settings, model activation and rollback, retrain
requests, adjudications, admin edits, accounts and roles), kept by django-auditlog in one table that
admins read on the audit page and in the Django admin.

Web requests get their actor from ``AuditlogMiddleware``; services that also run outside a request
(a worker activating the first model, a management command) name the actor with ``audit_actor``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from auditlog.context import set_actor
from django.contrib.auth.models import User


@contextlib.contextmanager
def audit_actor(user: User | None) -> Iterator[None]:
    """Attribute the audit entries written inside the block to ``user`` (no-op for None)."""
    if user is None or not getattr(user, "is_authenticated", False):
        yield
        return
    with set_actor(user):
        yield


def audit_registry_setup() -> None:
    """Register the models whose changes are audited (called once, from AppConfig.ready)."""
    from auditlog.registry import auditlog
    from django.contrib.auth.models import Group, User

    from grading.models import (
        Grade,
        GradeLevel,
        Image,
        Job,
        ModelVersion,
        Patient,
        WorkbenchSettings,
    )

    # The whole settings row, so fields that other features add are audited without listing them.
    auditlog.register(WorkbenchSettings)
    auditlog.register(ModelVersion, exclude_fields=["metrics", "holdout_sha256", "train_counts"])
    # Retrain requests and every other job: created_by says who asked; progress churn is left out.
    auditlog.register(
        Job,
        include_fields=["kind", "state", "created_by", "params", "model_version"],
    )
    # Adjudications and every grade: append-only rows, each creation recorded with its actor.
    auditlog.register(Grade)
    # Admin edits of images and patients: what says whose eye it is and its confirmed grade
    # (dimensions and the content hash never change).
    auditlog.register(
        Image,
        include_fields=[
            "patient",
            "eye",
            "acquired_on",
            "source",
            "original_filename",
            # Not confirmed_at: the entry's own timestamp says when.
            *(name for name in Image.CONFIRMATION_FIELDS if name != "confirmed_at"),
        ],
    )
    auditlog.register(Patient)
    auditlog.register(GradeLevel)
    # Accounts and roles: group membership, staff and superuser flags; never the password hash.
    auditlog.register(
        User,
        exclude_fields=["password", "last_login"],
        m2m_fields={"groups", "user_permissions"},
    )
    auditlog.register(Group, m2m_fields={"permissions"})
