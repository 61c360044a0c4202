"""The visibility probe (issue 20): GET every route of the site, the Django admin's pages (lists,
searches, change and history pages), the audit page, the API and the exports, as a first reader,
a second reader, an admin who grades and a reviewer, and count what each saw that the visibility
rule withholds from them ("leaks") and the answers of 500 or more ("server errors").

The scenario: two pending images, A graded by alice and B graded by bob, each with the active
model's prediction. Each grade's notes and each prediction's probability carry a unique mark.
alice may see A's marks (her grade, then the model) and never B's; bob the reverse; an admin who
grades and has graded neither sees none; a reviewer, who never grades, may see all.

Run: ``pytest tests/test_visibility_probe.py -s`` (prints the matrix's counts).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.contrib.auth.models import User
from django.db.models import Model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from grading.models import CorrectionRequest, Grade, Image, Job, ModelVersion, Prediction

PLACEHOLDER = re.compile(r"<(?:(\w+):)?(\w+)>")
# Routes that log out, or only redirect elsewhere, or need a content type: nothing to read.
SKIPPED = ("accounts/logout/", "admin/logout/", "admin/r/")
# The readiness probe answers 503 by design while no ML worker has a fresh heartbeat
# (tests/test_operations.py); its body is still searched for leaks.
NOT_READY = "/readyz"


@dataclass
class Scenario:
    users: dict[str, User]
    images: dict[str, Image]
    marks: dict[str, tuple[str, ...]]  # image key -> the strings that reveal its grade or model
    forbidden: dict[str, tuple[str, ...]]  # user key -> image keys whose marks they may not see
    # Searches of the admin's lists and of the audit page.
    extra_queries: tuple[str, ...] = ("?q=alice", "?q=bob")
    # user key -> image keys whose marks they must see somewhere (the probe's own check that a
    # mark would be found where it is shown).
    expected: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class ProbeReport:
    requests: int = 0
    leaks: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    by_user: dict[str, int] = field(default_factory=dict)
    # (user key, image key) pairs whose marks were seen where they may be seen.
    shown: set[tuple[str, str]] = field(default_factory=set)

    def summary(self) -> str:
        users = ", ".join(f"{name} {count}" for name, count in self.by_user.items())
        return (
            f"visibility probe: {self.requests} requests ({users}); "
            f"{len(self.leaks)} leaks, {len(self.server_errors)} server errors"
        )


def _routes(resolver: URLResolver | None = None, prefix: str = "") -> Iterator[str]:
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        route = str(entry.pattern)
        if route.startswith("^"):
            route = route.lstrip("^").rstrip("$")
            route = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"<\1>", route)
            route = route.replace("\\", "")
        if isinstance(entry, URLResolver):
            yield from _routes(entry, prefix + route)
        elif isinstance(entry, URLPattern):
            yield prefix + route


def _admin_objects(route: str, scenario: Scenario) -> list[str]:
    match = re.match(r"admin/(\w+)/(\w+)/", route)
    if match is None:
        return []
    model: type[Model] = apps.get_model(match.group(1), match.group(2))
    images = list(scenario.images.values())
    related: dict[type[Model], Any] = {
        Grade: Grade.objects.filter(image__in=images),
        CorrectionRequest: CorrectionRequest.objects.filter(image__in=images),
        Prediction: Prediction.objects.filter(image__in=images),
        Image: Image.objects.filter(pk__in=[image.pk for image in images]),
    }
    rows = related.get(model) or model._default_manager.all()[:2]
    return [str(row.pk) for row in rows]


def _values(name: str, route: str, scenario: Scenario) -> list[str]:
    images = list(scenario.images.values())
    if name == "image_id":
        return [str(image.pk) for image in images]
    if name == "patient_id":
        return [str(image.patient_id) for image in images]
    if name == "job_id":
        return [str(pk) for pk in Job.objects.values_list("pk", flat=True)[:2]]
    if name == "version_id":
        return [str(pk) for pk in ModelVersion.objects.values_list("pk", flat=True)[:2]]
    if name == "mode":
        return ["thumb"]
    if name == "object_id":
        return _admin_objects(route, scenario)
    if name == "app_label":
        return ["grading", "auth", "auditlog", "authtoken", "axes"]
    return []


def probe_urls(scenario: Scenario) -> list[str]:
    """Every route with each placeholder filled with the scenario's objects; lists and the audit
    page also with search queries."""
    urls: set[str] = set()
    for route in _routes():
        if route.startswith(SKIPPED):
            continue
        names = [match.group(2) for match in PLACEHOLDER.finditer(route)]
        choices = [_values(name, route, scenario) for name in names]
        if any(not values for values in choices):
            continue
        for combination in itertools.product(*choices):
            url = route
            for value in combination:
                url = PLACEHOLDER.sub(value, url, count=1)
            urls.add("/" + url)
            searchable = url.startswith("admin/") and url.count("/") == 3 or url == "audit/"
            if not names and searchable:
                urls.update(f"/{url}{query}" for query in scenario.extra_queries)
    return sorted(urls)


def mark_shown(mark: str, body: str) -> bool:
    """Whether ``mark`` is in ``body``; a mark that starts or ends with a digit only as a whole
    number (0.6173 is not the tail of 10.61731, the latency sum in /metrics that once matched)."""
    pattern = re.escape(mark)
    if mark[:1].isdigit():
        pattern = r"(?<![\d.])" + pattern
    if mark[-1:].isdigit():
        pattern += r"(?![\d])"
    return re.search(pattern, body) is not None


def _body(response: Any) -> str:
    if getattr(response, "streaming", False):
        content = b"".join(response.streaming_content)
    else:
        content = response.content
    return content.decode("utf-8", errors="ignore")


def probe_run(scenario: Scenario) -> ProbeReport:
    report = ProbeReport()
    urls = probe_urls(scenario)
    for user_key, user in scenario.users.items():
        client = Client()
        client.force_login(user)
        marks = [
            (image_key, mark)
            for image_key in scenario.forbidden[user_key]
            for mark in scenario.marks[image_key]
        ]
        for url in urls:
            response = client.get(url)
            report.requests += 1
            report.by_user[user_key] = report.by_user.get(user_key, 0) + 1
            not_ready = response.status_code == 503 and url.rstrip("/") == NOT_READY
            if response.status_code >= 500 and not not_ready:
                report.server_errors.append(f"{user_key} {url} {response.status_code}")
                continue
            body = _body(response)
            report.shown |= {
                (user_key, image_key)
                for image_key in scenario.expected.get(user_key, ())
                if any(mark_shown(mark, body) for mark in scenario.marks[image_key])
            }
            report.leaks += [
                f"{user_key} {url}: image {image_key} ({mark})"
                for image_key, mark in marks
                if mark_shown(mark, body)
            ]
    return report
