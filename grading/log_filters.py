"""Logging filters. A refused request (403) is routine, not an error: it is logged as one line with
the user and the path, never with a traceback that would bury real errors."""

from __future__ import annotations

import logging


class ForbiddenOneLineFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) != 403:
            return True
        request = getattr(record, "request", None)
        user = getattr(request, "user", None)
        who = user.get_username() if user is not None and user.is_authenticated else "anonymous"
        path = getattr(request, "path", "?")
        method = getattr(request, "method", "?")
        reason = str(record.exc_info[1]) if record.exc_info and record.exc_info[1] else ""
        record.msg = "Forbidden: %s %s user=%s%s"
        record.args = (method, path, who, f" ({reason})" if reason else "")
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


class SuspiciousOneLineFilter(logging.Filter):
    """A request refused as suspicious (a bad ``Host`` header above all: scanners send them all
    day) is one line with the reason and the path, never a traceback. On the console handler, so
    it covers every ``django.security.*`` logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        from django.core.exceptions import SuspiciousOperation

        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, SuspiciousOperation):
            return True
        request = getattr(record, "request", None)
        record.msg = "Refused (%s): %s path=%s"
        record.args = (type(error).__name__, str(error), getattr(request, "path", "?"))
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True
