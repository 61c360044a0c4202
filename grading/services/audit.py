"""The audit trail: who changed what that matters (settings, model activation and rollback, retrain
requests, adjudications, admin edits, accounts and roles), kept by django-auditlog in one table that
admins read on the audit page and in the Django admin.

Web requests get their actor from ``AuditlogMiddleware``; services that also run outside a request
(a worker activating the first model, a management command) name the actor with ``audit_actor``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

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
        CertificationItem,
        CorrectionRequest,
        Grade,
        GradeLevel,
        Image,
        Job,
        ModelVersion,
        Patient,
        Prediction,
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
    # The certification set's reference grades, readers' correction requests, and predictions
    # (written in bulk by the worker, which sends no signal: what is recorded here are edits).
    auditlog.register(CertificationItem)
    auditlog.register(CorrectionRequest)
    auditlog.register(Prediction)
    _audit_signals_connect()


def _token_logged(*, token: Any, action: int) -> None:
    """An API token created or revoked, named by its owner: the key itself (the token's pk and
    its str()) never goes into the trail."""
    from auditlog.models import LogEntry
    from django.contrib.contenttypes.models import ContentType
    from rest_framework.authtoken.models import Token

    owner = getattr(token, "user", None)
    LogEntry.objects.create(
        content_type=ContentType.objects.get_for_model(Token),
        object_pk=str(token.user_id),
        object_id=token.user_id,
        object_repr=f"API token of {owner}",
        action=action,
        changes={
            "token": ["–", "created"] if action == LogEntry.Action.CREATE else ["–", "revoked"]
        },
    )


def _token_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    from auditlog.models import LogEntry

    if created:
        _token_logged(token=instance, action=LogEntry.Action.CREATE)


def _token_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    from auditlog.models import LogEntry

    _token_logged(token=instance, action=LogEntry.Action.DELETE)


def _password_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    """A password set (changed on the account page, reset by e-mail, set by an admin or a
    command): one entry without the hash. ``_password`` is what ``set_password`` leaves for
    ``save`` (Django clears it after this signal)."""
    from auditlog.models import LogEntry

    if created or getattr(instance, "_password", None) is None:
        return
    LogEntry.objects.log_create(
        instance,
        action=LogEntry.Action.UPDATE,
        changes={"password": ["–", "changed"]},
        force_log=True,
    )


def _audit_signals_connect() -> None:
    from django.contrib.auth.models import User
    from django.db.models.signals import post_delete, post_save
    from rest_framework.authtoken.models import Token, TokenProxy

    for model in (Token, TokenProxy):
        post_save.connect(_token_saved, sender=model, dispatch_uid=f"audit-token-{model.__name__}")
        post_delete.connect(
            _token_deleted, sender=model, dispatch_uid=f"audit-token-del-{model.__name__}"
        )
    post_save.connect(_password_saved, sender=User, dispatch_uid="audit-password")
