"""Reads of the audit trail (django-auditlog's LogEntry table)."""

from __future__ import annotations

from auditlog.models import LogEntry
from django.db.models import QuerySet


def audit_entries() -> QuerySet[LogEntry]:
    """Every recorded change, newest first, with who made it and on what."""
    return LogEntry.objects.select_related("actor", "content_type").order_by("-timestamp", "-id")


def audit_changes_text(entry: LogEntry) -> str:
    """The entry's changes in words: "field: old → new" for fields, "groups: add reviewer" for
    many-to-many changes (which auditlog stores in another shape)."""
    parts = []
    for field, change in (entry.changes_dict or {}).items():
        if isinstance(change, dict):  # many-to-many: {"type": "m2m", "operation", "objects"}
            objects = ", ".join(str(item) for item in change.get("objects", []))
            parts.append(f"{field}: {change.get('operation', 'change')} {objects}")
        elif isinstance(change, list | tuple) and len(change) == 2:
            parts.append(f"{field}: {change[0]} → {change[1]}")
        else:
            parts.append(f"{field}: {change}")
    return "; ".join(parts)
