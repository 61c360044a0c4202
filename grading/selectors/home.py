"""Reads for the home page: each role's starting point (what is waiting, what needs attention)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.contrib.auth.models import User
from django.db.models import Count, Max, Q
from django.utils import timezone

from grading.models import Grade, Image, Job, ModelVersion
from grading.selectors import worklist as worklist_selectors
from grading.selectors.dates import day_start
from grading.selectors.jobs import job_error_headline, jobs_open
from grading.selectors.model_versions import model_version_active, model_version_headline

# A failed job is worth an alert for a week, unless a later job of the same kind replaced it.
FAILED_JOB_ALERT_DAYS = 7
ADJUDICATION_PREVIEW = 5


@dataclass
class ClinicianHome:
    waiting_for_me: int  # at most WORKLIST_COUNT_CAP ("250+" when waiting_capped)
    pending_total: int
    done_today: int
    done_this_week: int
    waiting_capped: bool = False


@dataclass
class ReviewerHome:
    adjudication_waiting: int
    model_disagreements: int
    oldest_waiting: list[Image] = field(default_factory=list)


@dataclass
class AdminHome:
    active: ModelVersion | None
    active_headline: dict
    open_jobs: list[Job]
    failed_jobs: list[Job]
    adjudication_waiting: int
    better_candidates: list[tuple[ModelVersion, dict]]
    quality_waiting: int = 0


def _week_start(today: dt.date) -> dt.date:
    return today - dt.timedelta(days=today.weekday())


def home_clinician(*, user: User) -> ClinicianHome:
    today = timezone.localdate()
    # The first day of the week is midnight local time; Grade.created_at is stored in UTC.
    week_start = day_start(_week_start(today))
    today_start = day_start(today)
    done = Grade.objects.filter(
        grader=user, kind=Grade.Kind.GRADER, created_at__gte=week_start
    ).aggregate(
        week=Count("image", distinct=True),
        today=Count("image", distinct=True, filter=Q(created_at__gte=today_start)),
    )
    # Counted up to the worklist's cap, like the worklist: an exact count checks every pending image
    # against this clinician's grades (0.3 s at 100,000 images).
    cap = worklist_selectors.WORKLIST_COUNT_CAP
    waiting = worklist_selectors.images_needing_grade(grader=user)[:cap].count()
    return ClinicianHome(
        waiting_for_me=waiting,
        waiting_capped=waiting >= cap,
        pending_total=Image.objects.filter(grading_state=Image.GradingState.PENDING).count(),
        done_today=done["today"],
        done_this_week=done["week"],
    )


def home_reviewer() -> ReviewerHome:
    waiting = worklist_selectors.adjudication_pending()
    return ReviewerHome(
        adjudication_waiting=waiting.count(),
        model_disagreements=worklist_selectors.model_disagreements_count(),
        oldest_waiting=list(waiting[:ADJUDICATION_PREVIEW]),
    )


def jobs_failed_recently(*, days: int = FAILED_JOB_ALERT_DAYS) -> list[Job]:
    """Failed jobs of the last ``days`` days that no later job of the same kind replaced."""
    since = timezone.now() - dt.timedelta(days=days)
    failed = list(
        Job.objects.filter(state=Job.State.FAILED, created_at__gte=since).order_by("-created_at")[
            :50
        ]
    )
    latest_other = {
        row["kind"]: row["latest"]
        for row in Job.objects.filter(created_at__gte=since)
        .exclude(state__in=(Job.State.FAILED, Job.State.CANCELLED))
        .values("kind")
        .annotate(latest=Max("created_at"))
    }
    alerts: list[Job] = []
    seen_kinds: set[str] = set()
    for job in failed:
        replaced = latest_other.get(job.kind)
        if (replaced and replaced > job.created_at) or job.kind in seen_kinds:
            continue
        seen_kinds.add(job.kind)  # one alert per kind: the latest failure
        job.error_headline = job_error_headline(job=job)
        alerts.append(job)
    return alerts


def candidates_better_than_active(
    *, active: ModelVersion | None
) -> list[tuple[ModelVersion, dict]]:
    """Candidates whose registry QWK beats the active version's, unless the paired comparison on
    the same images (when the two have images in common) finds them no better: a higher figure
    inside the noise is not an alert."""
    from grading.selectors.model_versions import model_versions_compare

    if active is None:
        return []
    active_qwk = model_version_headline(version=active).get("qwk")
    if active_qwk is None:
        return []
    better = []
    for candidate in ModelVersion.objects.filter(state=ModelVersion.State.CANDIDATE).order_by(
        "-created_at"
    )[:20]:
        headline = model_version_headline(version=candidate)
        if headline.get("qwk") is None or headline["qwk"] <= active_qwk:
            continue
        paired = model_versions_compare(first=active, second=candidate).paired
        if paired is None or paired["verdict"] == "better":
            better.append((candidate, headline))
    return better


def home_admin() -> AdminHome:
    active = model_version_active()
    return AdminHome(
        active=active,
        active_headline=model_version_headline(version=active) if active else {},
        open_jobs=list(jobs_open().select_related("created_by").order_by("created_at")),
        failed_jobs=jobs_failed_recently(),
        adjudication_waiting=Image.objects.filter(
            grading_state=Image.GradingState.ADJUDICATION
        ).count(),
        better_candidates=candidates_better_than_active(active=active),
        quality_waiting=Image.objects.filter(
            grading_state=Image.GradingState.PENDING, quality_review=Image.QualityReview.CHECK
        ).count(),
    )
