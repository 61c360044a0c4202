"""Prometheus metrics: django-prometheus's request metrics plus Funduscope's own, read from the
database and the broker when /metrics is scraped (so they are right whichever web or worker
process did the work, and cost nothing between scrapes)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator

import redis
from django.db.models import Count
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from grading.broker import broker_client, broker_key_prefix
from grading.models import Grade, Image, Job, ModelVersion, Prediction

QUEUES = ("default", "ml")
# kombu's Redis transport keeps messages of priority p > 0 in "<queue>\x06\x16<p>".
_PRIORITY_STEPS = (0, 3, 6, 9)
_PRIORITY_SEPARATOR = "\x06\x16"


def queue_depths() -> dict[str, int]:
    """Messages waiting per Celery queue (-1 when the broker does not answer)."""
    prefix = broker_key_prefix()
    client = broker_client()
    depths: dict[str, int] = {}
    try:
        for queue in QUEUES:
            keys = [
                prefix + queue + (f"{_PRIORITY_SEPARATOR}{step}" if step else "")
                for step in _PRIORITY_STEPS
            ]
            try:
                depths[queue] = sum(int(client.llen(key)) for key in keys)
            except (redis.exceptions.RedisError, OSError):
                depths[queue] = -1
    finally:
        client.close()
    return depths


def _job_metrics() -> Iterator[Metric]:
    jobs = GaugeMetricFamily("fundus_jobs", "Jobs by kind and state", labels=["kind", "state"])
    for row in Job.objects.values("kind", "state").annotate(n=Count("id")).order_by():
        jobs.add_metric([row["kind"], row["state"]], row["n"])
    yield jobs
    failures = CounterMetricFamily(
        "fundus_job_failures", "Failed jobs by kind (all time)", labels=["kind"]
    )
    duration = SummaryMetricFamily(
        "fundus_job_duration_seconds", "Run time of finished jobs by kind", labels=["kind"]
    )
    totals: dict[str, tuple[int, float]] = {kind: (0, 0.0) for kind in Job.Kind.values}
    failed: dict[str, int] = dict.fromkeys(Job.Kind.values, 0)
    finished = Job.objects.filter(
        state__in=(Job.State.SUCCEEDED, Job.State.FAILED), started_at__isnull=False
    ).values_list("kind", "state", "started_at", "finished_at")
    for kind, state, started, ended in finished.iterator():
        if state == Job.State.FAILED:
            failed[kind] = failed.get(kind, 0) + 1
        if started is not None and ended is not None:
            count, seconds = totals.get(kind, (0, 0.0))
            totals[kind] = (count + 1, seconds + (ended - started).total_seconds())
    for kind, (count, seconds) in totals.items():
        duration.add_metric([kind], count, seconds)
        failures.add_metric([kind], failed.get(kind, 0))
    yield duration
    yield failures


def _grading_metrics() -> Iterator[Metric]:
    saved = CounterMetricFamily("fundus_grades_saved", "Grades saved (all time)")
    saved.add_metric([], Grade.objects.count())
    yield saved
    hour = GaugeMetricFamily("fundus_grades_saved_last_hour", "Grades saved in the last hour")
    since = timezone.now() - dt.timedelta(hours=1)
    hour.add_metric([], Grade.objects.filter(created_at__gte=since).count())
    yield hour
    waiting = GaugeMetricFamily("fundus_images", "Images by grading state", labels=["state"])
    counts = dict.fromkeys(Image.GradingState.values, 0)
    for row in Image.objects.values("grading_state").annotate(n=Count("id")).order_by():
        counts[row["grading_state"]] = row["n"]
    for state, count in counts.items():
        waiting.add_metric([state], count)
    quality = Image.objects.filter(quality_review=Image.QualityReview.CHECK).count()
    waiting.add_metric(["quality_check"], quality)
    yield waiting


def _model_metrics() -> Iterator[Metric]:
    active = ModelVersion.objects.filter(state=ModelVersion.State.ACTIVE).first()
    info = GaugeMetricFamily(
        "fundus_active_model_version", "The active model version (1), by name", labels=["version"]
    )
    predictions = GaugeMetricFamily(
        "fundus_predictions",
        "The active version's predictions by predicted grade",
        labels=["grade", "in_training"],
    )
    if active is not None:
        info.add_metric([active.name], 1)
        rows = (
            Prediction.objects.filter(model_version=active)
            .values("predicted_grade_id", "in_training")
            .annotate(n=Count("id"))
            .order_by()
        )
        for row in rows:
            predictions.add_metric(
                [str(row["predicted_grade_id"]), str(row["in_training"]).lower()], row["n"]
            )
    yield info
    yield predictions


class FunduscopeCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "fundus_celery_queue_depth",
            "Messages waiting per Celery queue (-1: broker unreachable)",
            labels=["queue"],
        )
        for queue, count in queue_depths().items():
            depth.add_metric([queue], count)
        yield depth
        yield from _job_metrics()
        yield from _grading_metrics()
        yield from _model_metrics()
        from grading.selectors.drift import drift_metrics

        yield from drift_metrics()


def metrics_exposition() -> tuple[bytes, str]:
    """The text exposition of every metric, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several gunicorn workers: add up what each one counted (prometheus-client's files).
        base = CollectorRegistry()
        MultiProcessCollector(base)
    else:
        base = REGISTRY
    ours = CollectorRegistry(auto_describe=False)
    ours.register(FunduscopeCollector())
    return generate_latest(base) + generate_latest(ours), CONTENT_TYPE_LATEST
