"""One log line per request and per job event, each carrying a request id.

The request id comes from the client's ``X-Request-ID`` (a proxy's) when it is a short token,
otherwise a new one; it is answered in the response's ``X-Request-ID``, travels in the headers of
every Celery task the request enqueues, and is set again while the worker runs that task, so a
job's log lines can be found from the request that started it. With ``FUNDUS_LOG_FORMAT=json`` the
console handler writes each line as one JSON object (settings.LOGGING).
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery.signals import before_task_publish, task_failure, task_postrun, task_prerun
from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "fundus_request_id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_task_started: dict[str, float] = {}

request_logger = logging.getLogger("grading.requests")
job_logger = logging.getLogger("grading.jobs")


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (empty outside a request or task) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = request_id_var.get()
        return True


def request_id_for(request: HttpRequest) -> str:
    given = request.headers.get("X-Request-ID", "")
    return given if _SAFE_REQUEST_ID.match(given) else uuid.uuid4().hex


class RequestLogMiddleware:
    """Logs one line per request: method, path, view, status, duration and user id."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_for(request)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request_id
            match = request.resolver_match
            user = getattr(request, "user", None)
            request_logger.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "view": match.view_name if match else "",
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "user_id": user.pk if user is not None and user.is_authenticated else None,
                },
            )
            return response
        finally:
            request_id_var.reset(token)


@before_task_publish.connect
def _request_id_into_task(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    request_id = request_id_var.get()
    if headers is not None and request_id:
        headers[REQUEST_ID_HEADER] = request_id


def _task_fields(task: Any, task_id: str, args: Any) -> dict[str, Any]:
    return {
        "request_id": request_id_var.get(),
        "task": getattr(task, "name", ""),
        "task_id": task_id,
        "job_id": args[0] if args else None,
    }


@task_prerun.connect
def _job_started(task_id: str = "", task: Any = None, args: Any = None, **kwargs: Any) -> None:
    request = getattr(task, "request", None)
    request_id_var.set(str(getattr(request, REQUEST_ID_HEADER, None) or ""))
    _task_started[task_id] = time.perf_counter()
    job_logger.info("job started", extra={"event": "started", **_task_fields(task, task_id, args)})


@task_postrun.connect
def _job_finished(
    task_id: str = "", task: Any = None, args: Any = None, state: str = "", **kwargs: Any
) -> None:
    started = _task_started.pop(task_id, None)
    fields = _task_fields(task, task_id, args)
    duration = round(time.perf_counter() - started, 3) if started is not None else None
    job_logger.info(
        "job finished",
        extra={"event": "finished", "state": state, "duration_s": duration, **fields},
    )
    request_id_var.set("")


@task_failure.connect
def _job_failed(
    task_id: str = "", sender: Any = None, args: Any = None, exception: Any = None, **kwargs: Any
) -> None:
    job_logger.warning(
        "job failed: %s",
        exception,
        extra={"event": "failed", "error": str(exception), **_task_fields(sender, task_id, args)},
    )
