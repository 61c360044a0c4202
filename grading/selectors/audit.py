"""Reads of the audit trail (django-auditlog's LogEntry table)."""

from __future__ import annotations

from auditlog.models import LogEntry
from django.db.models import QuerySet


def audit_entries() -> QuerySet[LogEntry]:
    """Every recorded change, newest first, with who made it and on what."""
    return LogEntry.objects.select_related("actor", "content_type").order_by("-timestamp", "-id")


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
