"""Operations endpoints for machines, not people: readiness (/readyz) and Prometheus metrics
(/metrics). Liveness (/healthz) is in views/core.py. None of them needs a login; /metrics needs
the FUNDUS_METRICS_TOKEN instead."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound, JsonResponse
from django.urls import path
from django.views.decorators.http import require_GET
from health_check.views import HealthCheckView

from grading.selectors.metrics import metrics_exposition
from grading.selectors.readiness import readiness_checks


class ReadinessView(HealthCheckView):
    """JSON only, one status per check; 503 (not django-health-check's 500) when one fails, so a
    load balancer or orchestrator takes the instance out of rotation rather than alerting on a
    server error."""

    checks = readiness_checks()

    async def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        with self.get_executor() as executor:
            self.results = await asyncio.gather(
                *(check.get_result(executor) for check in self.get_checks())
            )
        failed = any(result.error for result in self.results)
        checks = {
            type(result.check).__name__: "ok" if not result.error else str(result.error)
            for result in self.results
        }
        body = {"status": "unavailable" if failed else "ok", "checks": checks}
        return JsonResponse(body, status=503 if failed else 200)


def _metrics_allowed(request: HttpRequest) -> bool:
    token = settings.FUNDUS_METRICS_TOKEN
    if not token:
        # Open on a development machine; never in production without a token.
        return not settings.PRODUCTION
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


@login_not_required
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not _metrics_allowed(request):
        # 404 rather than 401/403: an unauthenticated scanner learns nothing about the endpoint
        # (and a plain one: no page rendering for a scraper).
        return HttpResponseNotFound("Not found\n", content_type="text/plain")
    body, content_type = metrics_exposition()
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response


urlpatterns = [
    path("readyz", login_not_required(ReadinessView.as_view()), name="readyz"),
    path("metrics", metrics, name="metrics"),
]
