"""Reads of the audit trail (django-auditlog's LogEntry table)."""

from __future__ import annotations

from typing import Any

from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db.models import Q, QuerySet

from grading.models import CertificationItem, CorrectionRequest, Grade, Image, Prediction
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


_EMPTY_VALUES = ("None", "", None)


def audit_changes_text(entry: LogEntry) -> str:
    """The entry's changes in words: "field: old → new" for fields, "groups: add reviewer" for
    many-to-many changes (which auditlog stores in another shape). A creation lists only the
    values it set."""
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
            if entry.action == LogEntry.Action.CREATE:
                if new not in _EMPTY_VALUES and field != "id":
                    parts.append(f"{field}: {new}")
            else:
                parts.append(f"{field}: {old} → {new}")
        else:
            parts.append(f"{field}: {change}")
    return "; ".join(parts)
