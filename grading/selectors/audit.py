"""Reads of the audit trail (django-auditlog's LogEntry table)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.db.models import ForeignKey, Q, QuerySet

from grading.models import CertificationItem, CorrectionRequest, Grade, Image, Prediction
from grading.selectors.dates import day_start
from grading.selectors.visibility import (
    certification_items_visible_q,
    grades_visible_q,
    images_others_hidden,
    predictions_visible_q,
)


def audit_hidden_q(*, viewer: Any) -> Q:
    """The entries that would show this viewer what the visibility rule withholds: grades and
    correction requests of others, predictions, certification references, and the changes of an
    image's confirmation, on the images withheld from them (their own entries always show)."""

    def about(model: type, ids: QuerySet) -> Q:
        content_type = ContentType.objects.get_for_model(model)
        return Q(content_type=content_type, object_id__in=ids)

    hidden_images = images_others_hidden(user=viewer).values("pk")
    hidden = (
        about(Grade, Grade.objects.exclude(grades_visible_q(user=viewer)).values("pk"))
        | about(
            CorrectionRequest,
            CorrectionRequest.objects.exclude(grades_visible_q(user=viewer)).values("pk"),
        )
        | about(
            Prediction, Prediction.objects.exclude(predictions_visible_q(user=viewer)).values("pk")
        )
        | about(
            CertificationItem,
            CertificationItem.objects.exclude(certification_items_visible_q(user=viewer)).values(
                "pk"
            ),
        )
        | (about(Image, hidden_images) & ~Q(action=LogEntry.Action.CREATE))
    )
    return hidden & ~Q(actor_id=viewer.pk)


def audit_entries(*, viewer: Any | None = None) -> QuerySet[LogEntry]:
    """Every recorded change, newest first, with who made it and on what; for a ``viewer``,
    without what the visibility rule withholds from them (``audit_hidden_q``)."""
    entries = LogEntry.objects.select_related("actor", "content_type").order_by("-timestamp", "-id")
    if viewer is None:
        return entries
    return entries.exclude(audit_hidden_q(viewer=viewer))


def audit_entries_filtered(
    *,
    entries: QuerySet[LogEntry],
    actor: User | None = None,
    action: int | None = None,
    content_type: ContentType | None = None,
    object_pk: str = "",
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
) -> QuerySet[LogEntry]:
    """``entries`` narrowed by the audit page's filters (each optional; dates inclusive)."""
    if actor is not None:
        entries = entries.filter(actor=actor)
    if action is not None:
        entries = entries.filter(action=action)
    if content_type is not None:
        entries = entries.filter(content_type=content_type)
    if object_pk:
        entries = entries.filter(object_pk=object_pk)
    if date_from is not None:
        entries = entries.filter(timestamp__gte=day_start(date_from))
    if date_to is not None:
        entries = entries.filter(timestamp__lt=day_start(date_to + dt.timedelta(days=1)))
    return entries


def audit_user_names(*, entries: Iterable[LogEntry]) -> dict[str, str]:
    """User names by id (as text) for the user fields these entries changed, e.g. a model
    version's ``activated_by``: "activated_by: None → 1" reads "→ adam"."""
    ids: set[int] = set()
    for entry in entries:
        fields = _user_fields(entry)
        for field, change in (entry.changes_dict or {}).items():
            if field in fields and isinstance(change, list | tuple):
                ids.update(int(value) for value in change if str(value).isdigit())
    users = get_user_model().objects.filter(pk__in=ids)
    return {str(user.pk): user.get_username() for user in users}


def _user_fields(entry: LogEntry) -> set[str]:
    model = entry.content_type.model_class() if entry.content_type_id else None
    if model is None:
        return set()
    user_model = get_user_model()
    return {
        field.name
        for field in model._meta.concrete_fields
        if isinstance(field, ForeignKey) and field.related_model is user_model
    }


_EMPTY_VALUES = ("None", "", None)


def audit_changes_text(entry: LogEntry, user_names: Mapping[str, str] | None = None) -> str:
    """The entry's changes in words: "field: old → new" for fields, "groups: add reviewer" for
    many-to-many changes (which auditlog stores in another shape). A creation lists only the
    values it set. ``user_names`` (``audit_user_names``) names the users of user fields."""
    model = entry.content_type.model_class() if entry.content_type_id else None
    concrete = {field.name for field in model._meta.concrete_fields} if model is not None else None
    parts = []
    for field, change in (entry.changes_dict or {}).items():
        if isinstance(change, dict):  # many-to-many: {"type": "m2m", "operation", "objects"}
            objects = ", ".join(str(item) for item in change.get("objects", []))
            parts.append(f"{field}: {change.get('operation', 'change')} {objects}")
            continue
        if concrete is not None and field not in concrete:
            continue  # reverse relations, which auditlog lists on creation
        if isinstance(change, list | tuple) and len(change) == 2:
            old, new = change
            if user_names is not None and field in _user_fields(entry):
                old, new = (user_names.get(str(value), value) for value in (old, new))
            if entry.action == LogEntry.Action.CREATE:
                if new not in _EMPTY_VALUES and field != "id":
                    parts.append(f"{field}: {new}")
            else:
                parts.append(f"{field}: {old} → {new}")
        else:
            parts.append(f"{field}: {change}")
    return "; ".join(parts)
