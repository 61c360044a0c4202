"""Background jobs: enqueue, claim, report progress, finish, cancel, retry, detect dead workers.

A ``Job`` row is the user-visible record of one Celery task. Its life:

    queued --(worker claims it)--> running --> succeeded | failed
    queued --(admin cancels)--> cancelled
    running --(heartbeat too old, or its worker restarted)--> failed (stale)

Every transition is a conditional ``UPDATE ... WHERE state = <expected>``, so a redelivered
message, a retry or a late worker never runs or overwrites a job twice. The partial unique
constraint on ``Job`` (one open job per kind, except per-upload predictions) makes two concurrent
retrain requests produce a single job whatever the race: the loser's INSERT fails and it gets the
winner's job back.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.utils import timezone

from grading.models import FeatureChunk, Job, ModelVersion

logger = logging.getLogger(__name__)

OPEN_STATES = (Job.State.QUEUED, Job.State.RUNNING)
# Kinds whose tasks share one task function per kind (grading.tasks.<kind>).
TASK_NAMES = {kind: f"grading.tasks.{kind}" for kind in Job.Kind.values}

Progress = Callable[[int, str], None]
# A job service that returns {JOB_CONTINUES: True} handed its job to other tasks (the chunks of
# a distributed extraction and the step after them): its task must not mark it succeeded.
JOB_CONTINUES = "continues"


class QueueUnavailable(RuntimeError):
    """The job queue (Redis) cannot be reached; nothing was queued. The message is for users."""


class JobStateError(ValueError):
    """The job is not in a state that allows this action (e.g. cancelling a running job)."""


class JobAbandoned(RuntimeError):
    """The job row is no longer running (cancelled, or marked stale): the worker must stop."""


# ---------------------------------------------------------------------------------------------
# Queue


def queue_broker_url() -> str:
    from grading.celery import app

    return str(app.conf.broker_url)


def queue_is_available(*, timeout: float = 1.0) -> bool:
    try:
        queue_check(timeout=timeout)
    except QueueUnavailable:
        return False
    return True


def queue_check(*, timeout: float = 1.0) -> None:
    """Raise ``QueueUnavailable`` unless the broker answers a PING within ``timeout`` seconds.

    Asked before a job row is written, so that a down Redis costs the user one fast, clear
    message rather than Celery's connection retry loop and a half-created job.
    """
    import redis

    url = queue_broker_url()
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.exceptions.RedisError, OSError) as error:
        raise QueueUnavailable(queue_unavailable_message(error)) from error


def queue_unavailable_message(error: BaseException | None = None) -> str:
    from kombu.utils.url import maybe_sanitize_url

    where = maybe_sanitize_url(queue_broker_url())
    detail = f" ({error})" if error else ""
    return (
        f"The job queue is unavailable: Redis does not answer at {where}{detail}. "
        "Nothing was queued; start Redis and try again."
    )


# ---------------------------------------------------------------------------------------------
# Enqueue, cancel, retry


def job_open_for_kind(*, kind: str) -> Job | None:
    return Job.objects.filter(kind=kind, state__in=OPEN_STATES).order_by("created_at").first()


def job_enqueue(
    *,
    kind: str,
    params: dict[str, Any] | None = None,
    created_by: User | None = None,
    model_version: ModelVersion | None = None,
) -> tuple[Job, bool]:
    """Queue a job of ``kind``; returns ``(job, created)``.

    If a job of that kind is already queued or running (only one per kind, except per-upload
    predictions), that job is returned with ``created=False`` instead of a second one. The task is
    sent when the surrounding transaction commits, so the worker always finds the row.
    Raises ``QueueUnavailable`` when Redis is down (before writing anything).
    """
    if kind not in TASK_NAMES:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(TASK_NAMES)}")
    if kind not in (Job.Kind.IMAGES_PREDICT, Job.Kind.IMAGES_IMPORT):
        existing = job_open_for_kind(kind=kind)
        if existing is not None:
            return existing, False
    queue_check()
    # Inside a caller's transaction the send happens at its commit, after we returned: a
    # failure then can only be recorded on the job, not raised to this caller.
    deferred = connection.in_atomic_block
    job = Job(
        kind=kind,
        params=params or {},
        created_by=created_by if created_by is not None and created_by.is_authenticated else None,
        model_version=model_version,
        celery_task_id=str(uuid.uuid4()),
        message="Waiting for a worker",
    )
    job.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            job.save()
            transaction.on_commit(
                lambda: _job_send(job_id=job.pk, raise_errors=not deferred), robust=deferred
            )
    except IntegrityError:
        # Lost the race against a concurrent request: the constraint kept one open job per kind.
        existing = job_open_for_kind(kind=kind)
        if existing is None:
            raise
        return existing, False
    return job, True


def _job_send(*, job_id: int, raise_errors: bool) -> None:
    from grading.celery import app

    job = Job.objects.get(pk=job_id)
    try:
        app.send_task(
            TASK_NAMES[job.kind],
            args=[job.pk],
            task_id=job.celery_task_id,
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5},
        )
    except Exception as error:  # kombu raises OperationalError / redis errors / OSError
        message = queue_unavailable_message(error)
        Job.objects.filter(pk=job_id, state=Job.State.QUEUED).update(
            state=Job.State.FAILED, error=message, message="Not queued", finished_at=timezone.now()
        )
        logger.warning("Job %s could not be queued: %s", job_id, error)
        if raise_errors:
            raise QueueUnavailable(message) from error


def job_cancel(*, job: Job) -> Job:
    """Cancel a queued job (a running job cannot be cancelled: TensorFlow is not interruptible)."""
    cancelled = Job.objects.filter(pk=job.pk, state=Job.State.QUEUED).update(
        state=Job.State.CANCELLED, message="Cancelled", finished_at=timezone.now()
    )
    job.refresh_from_db()
    if not cancelled:
        raise JobStateError(
            f"Only queued jobs can be cancelled; this job is {job.get_state_display().lower()}."
        )
    # Best effort: the worker would skip it anyway, since it only claims queued jobs.
    if job.celery_task_id:
        try:
            from grading.celery import app

            if queue_is_available(timeout=0.5):
                app.control.revoke(job.celery_task_id)
        except Exception:
            logger.info("Could not revoke task %s; the worker will skip it", job.celery_task_id)
    return job


def job_retry(*, job: Job, user: User | None = None) -> Job:
    """Run a failed (or cancelled) job again as a new job with the same parameters.

    The failed job stays in the history with its error. Raises ``QueueUnavailable``.
    """
    if job.state not in (Job.State.FAILED, Job.State.CANCELLED):
        raise JobStateError(
            f"Only failed or cancelled jobs can be retried; this job is "
            f"{job.get_state_display().lower()}."
        )
    if job.kind == Job.Kind.DICOM_RECEIVE:
        raise JobStateError(
            "A DICOM association cannot be run again from here: what it stored is kept, and the "
            "sender resends what it did not get an answer for."
        )
    params = dict(job.params)
    params["retry_of"] = job.pk
    new_job, _created = job_enqueue(
        kind=job.kind,
        params=params,
        created_by=user or job.created_by,
        model_version=job.model_version if job.kind == Job.Kind.IMAGES_PREDICT else None,
    )
    return new_job


# ---------------------------------------------------------------------------------------------
# Worker side: claim, progress, finish


def job_claim(*, job_id: int, task_id: str, worker: str) -> Job | None:
    """Atomically move the job from queued to running for this task; None if it is not ours to
    run (cancelled, already done, or a stale redelivery of an older task)."""
    now = timezone.now()
    claimed = Job.objects.filter(pk=job_id, state=Job.State.QUEUED, celery_task_id=task_id).update(
        state=Job.State.RUNNING,
        started_at=now,
        heartbeat_at=now,
        worker=worker[:255],
        progress=0,
        message="Started",
        error="",
    )
    if claimed != 1:
        return None
    return Job.objects.get(pk=job_id)


def job_hand_off(*, job_id: int) -> bool:
    """The task that claimed a running job handed the rest to other tasks: no worker holds it
    until ``job_continue_claim`` (so a restart of the first worker does not fail it)."""
    return bool(
        # The message stays: its chunks may already have moved it on.
        Job.objects.filter(pk=job_id, state=Job.State.RUNNING).update(
            worker="", heartbeat_at=timezone.now()
        )
    )


def job_continue_claim(*, job_id: int, worker: str) -> Job | None:
    """The step after a job's chunks takes the running job over (once: a duplicate delivery of
    it finds the job held by a worker and does nothing)."""
    claimed = Job.objects.filter(
        pk=job_id, state=Job.State.RUNNING, worker__in=("", worker)
    ).update(worker=worker[:255], heartbeat_at=timezone.now())
    return Job.objects.get(pk=job_id) if claimed else None


def job_progress_write(*, job_id: int, percent: int, message: str) -> None:
    """Record progress; raises ``JobAbandoned`` if the job is no longer running."""
    updated = Job.objects.filter(pk=job_id, state=Job.State.RUNNING).update(
        progress=max(0, min(100, int(percent))),
        message=message[:500],
        heartbeat_at=timezone.now(),
    )
    if not updated:
        raise JobAbandoned(f"Job {job_id} is no longer running; stopping.")


def job_succeed(*, job_id: int, result: dict[str, Any], message: str = "Done") -> bool:
    return bool(
        Job.objects.filter(pk=job_id, state=Job.State.RUNNING).update(
            state=Job.State.SUCCEEDED,
            progress=100,
            message=message[:500],
            result=result,
            finished_at=timezone.now(),
            heartbeat_at=timezone.now(),
        )
    )


def job_fail(*, job_id: int, error: str, message: str = "Failed") -> bool:
    """Mark an open job failed with the error (no-op for a job already finished)."""
    with transaction.atomic():
        updated = Job.objects.filter(pk=job_id, state__in=OPEN_STATES).update(
            state=Job.State.FAILED,
            message=message[:500],
            error=error,
            finished_at=timezone.now(),
        )
        if updated:
            _model_version_abandon(job_id=job_id)
    return bool(updated)


def job_requeue_for_retry(*, job_id: int, error: str, countdown: float) -> bool:
    """A transient error: the same task runs again after ``countdown`` seconds."""
    return bool(
        Job.objects.filter(pk=job_id, state=Job.State.RUNNING).update(
            state=Job.State.QUEUED,
            message=f"Retrying in {countdown:.0f} s after a transient error: {error}"[:500],
        )
    )


def _model_version_abandon(*, job_id: int) -> None:
    """A training job that dies leaves its half-made version as failed, never as a candidate."""
    ModelVersion.objects.filter(jobs__pk=job_id, state=ModelVersion.State.TRAINING).update(
        state=ModelVersion.State.FAILED
    )


def jobs_mark_stale(*, restarted_worker: str | None = None, now: dt.datetime | None = None) -> int:
    """Fail running jobs whose worker is gone; returns how many were marked.

    A running job is abandoned when its heartbeat is older than ``FUNDUS_JOB_STALE_SECONDS`` (the
    worker writes one every ``FUNDUS_JOB_HEARTBEAT_SECONDS`` from a separate thread, even during
    a long TensorFlow call), when it has run longer than the hard time limit, or when a worker of
    the same name has just started (``restarted_worker``): a fresh worker runs nothing yet.
    """
    now = now or timezone.now()
    stale_before = now - dt.timedelta(seconds=settings.FUNDUS_JOB_STALE_SECONDS)
    # A chunk whose worker died comes back to another worker only after the broker's visibility
    # timeout: until then a job with chunks left is waiting, not abandoned.
    waiting_before = stale_before - dt.timedelta(seconds=settings.FUNDUS_BROKER_VISIBILITY_SECONDS)
    running = Job.objects.filter(state=Job.State.RUNNING)
    with_chunks_left = set(
        FeatureChunk.objects.filter(job__state=Job.State.RUNNING)
        .exclude(state=FeatureChunk.State.DONE)
        .values_list("job_id", flat=True)
    )
    reasons: dict[int, str] = {}
    for job in running.only("id", "kind", "worker", "heartbeat_at", "started_at"):
        last_sign = job.heartbeat_at or job.started_at
        if job.pk in with_chunks_left and last_sign is not None and last_sign >= waiting_before:
            continue
        limit = _hard_time_limit(job.kind)
        if restarted_worker and job.worker == restarted_worker:
            reasons[job.pk] = (
                f"The worker {job.worker} restarted while this job was running "
                "(it was killed or crashed). Nothing it was doing was kept; retry the job."
            )
        elif last_sign is None or last_sign < stale_before:
            seen = f"{(now - last_sign).total_seconds():.0f} s ago" if last_sign else "never"
            reasons[job.pk] = (
                f"The worker {job.worker or '(unknown)'} stopped reporting (last heartbeat "
                f"{seen}); it was probably killed or lost. Retry the job."
            )
        elif job.started_at and (now - job.started_at).total_seconds() > limit:
            reasons[job.pk] = f"The job ran longer than its time limit of {limit} s."
    marked = 0
    for job_id, reason in reasons.items():
        if job_fail(job_id=job_id, error=reason, message="Stopped: worker lost"):
            marked += 1
            logger.warning("Job %s marked failed: %s", job_id, reason)
    return marked


def _hard_time_limit(kind: str) -> int:
    if kind in (Job.Kind.MODEL_TRAIN, Job.Kind.MODEL_EVALUATE):
        return settings.CELERY_TRAINING_TIME_LIMIT
    return settings.CELERY_TASK_TIME_LIMIT


# ---------------------------------------------------------------------------------------------
# Progress reporting with heartbeat


class JobReporter:
    """The ``progress(percent, message)`` callback handed to services and mlcore.

    Writes are throttled (a training loop may call this thousands of times) but a change of
    percentage is always written, the bar never moves backwards, and a job that is no longer
    running (marked stale, cancelled) raises ``JobAbandoned`` so the work stops. ``deadline``
    (monotonic seconds) enforces the soft time limit cooperatively: the solo pool that runs
    TensorFlow tasks does not enforce Celery's time limits itself.
    """

    def __init__(
        self, job_id: int, *, deadline: float | None = None, min_interval: float = 0.5
    ) -> None:
        self.job_id = job_id
        self.deadline = deadline
        self.min_interval = min_interval
        self.percent = 0
        self.message = ""
        self._last_write = 0.0

    def __call__(self, percent: int | float, message: str = "") -> None:
        from celery.exceptions import SoftTimeLimitExceeded

        if self.deadline is not None and time.monotonic() > self.deadline:
            raise SoftTimeLimitExceeded("The job exceeded its soft time limit.")
        percent = max(self.percent, min(100, int(percent)))
        message = message or self.message
        changed = percent != self.percent
        if not changed and (message == self.message or self._too_soon()):
            return
        self.percent, self.message = percent, message
        self._last_write = time.monotonic()
        job_progress_write(job_id=self.job_id, percent=percent, message=message)

    def _too_soon(self) -> bool:
        return time.monotonic() - self._last_write < self.min_interval

    def span(self, start: int, end: int) -> Progress:
        return progress_span(self, start, end)


def progress_span(progress: Progress, start: int, end: int) -> Progress:
    """A reporter mapping 0-100 onto ``start``-``end`` of ``progress`` (one step of a job)."""

    def report(percent: int | float, message: str = "") -> None:
        fraction = max(0.0, min(100.0, float(percent))) / 100.0
        progress(int(start + (end - start) * fraction), message)

    return report


class JobHeartbeat:
    """Writes ``heartbeat_at`` every ``interval`` seconds from a daemon thread while a job runs,
    so that a long call that reports no progress (loading TensorFlow, one big epoch) is not
    mistaken for a dead worker, and a killed worker is noticed within the stale delay."""

    def __init__(self, job_id: int, *, interval: float | None = None) -> None:
        self.job_id = job_id
        self.interval = interval or settings.FUNDUS_JOB_HEARTBEAT_SECONDS
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"job-{job_id}-heartbeat", daemon=True
        )

    def __enter__(self) -> JobHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    Job.objects.filter(pk=self.job_id, state=Job.State.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except Exception:  # a missed beat is harmless; the next one may succeed
                    logger.warning("Heartbeat of job %s failed", self.job_id, exc_info=True)
                    close_old_connections()
        finally:
            connection.close()  # this thread's own database connection
