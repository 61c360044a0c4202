"""Reads about background jobs for the jobs page."""

from __future__ import annotations

from django.db.models import Case, IntegerField, QuerySet, Value, When

from grading.models import Job

JOBS_PAGE_SIZE = 50


def jobs_list(*, limit: int = JOBS_PAGE_SIZE) -> list[Job]:
    """Open jobs first (running, then queued), then the most recent finished ones."""
    order = Case(
        When(state=Job.State.RUNNING, then=Value(0)),
        When(state=Job.State.QUEUED, then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    return list(
        Job.objects.select_related("created_by", "model_version")
        .annotate(open_order=order)
        .order_by("open_order", "-created_at", "-id")[:limit]
    )


def jobs_open() -> QuerySet[Job]:
    return Job.objects.filter(state__in=(Job.State.QUEUED, Job.State.RUNNING))


def job_training_open() -> Job | None:
    return jobs_open().filter(kind=Job.Kind.MODEL_TRAIN).first()


def job_error_headline(*, job: Job) -> str:
    """First line of the stored error (the rest is the traceback)."""
    return job.error.strip().split("\n", 1)[0] if job.error else ""
