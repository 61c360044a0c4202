"""Celery tasks: thin wrappers that claim a ``Job`` row, call one service and record the outcome.

Each task takes the job's primary key only. ``JobTask.run_job`` claims the row idempotently (a
redelivered or stale message finds it no longer queued and does nothing), runs the service with a
progress reporter and a heartbeat thread, and marks success. Transient errors (database or broker
connection hiccups) are retried with exponential backoff; anything else ends in ``on_failure``,
which marks the job failed with the error. The services import TensorFlow (through mlcore) inside
their functions, so this module is safe to import in the web process.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_init, worker_ready, worker_shutdown
from django.db import InterfaceError, OperationalError, connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from grading.models import Image, Job
from grading.services import (
    feature_shards,
    features,
    model_evaluation,
    model_training,
    model_versions,
    predictions,
    renderings,
    uploads,
    worker_heartbeat,
)
from grading.services import jobs as job_services
from grading.services.audit import audit_actor

logger = logging.getLogger(__name__)

# Worth another try: the database or Redis was briefly unreachable or locked. Everything else
# (bad data, a bug, a missing weights file) fails the job at once with its message.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    RedisConnectionError,
    RedisTimeoutError,
)

JobService = Callable[..., dict[str, Any]]
# The step after a job's chunks waits this long, this many times, for chunks still running.
CHUNKS_WAIT_SECONDS = 5
CHUNKS_WAIT_TRIES = 720


class JobTask(Task):
    """Base class of the job tasks: claim, heartbeat, progress, retry and failure handling."""

    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = 5  # seconds before the first retry, then doubled
    retry_backoff_max = 300
    retry_jitter = True
    max_retries = 3
    acks_late = True
    ignore_result = True  # the Job row is the record; nothing reads Celery results

    def run_job(self, job_id: int, service: JobService) -> dict[str, Any]:
        job = job_services.job_claim(
            job_id=job_id, task_id=self.request.id or "", worker=self.request.hostname or ""
        )
        if job is None:
            logger.info("Job %s is not queued for task %s; skipped", job_id, self.request.id)
            return {"skipped": True}
        return self._run_claimed(job, service)

    def continue_job(self, job_id: int, service: JobService) -> dict[str, Any]:
        """The step after a job's chunks (a chord's body): take over the running job, run the
        rest of it and mark the outcome."""
        done, total = feature_shards.feature_chunks_count(job_id=job_id)
        if done < total:
            # A chunk ran twice (redelivered while still running past the visibility timeout)
            # and the chord counted it twice: wait for the chunks that have not run yet.
            raise self.retry(countdown=CHUNKS_WAIT_SECONDS, max_retries=CHUNKS_WAIT_TRIES)
        job = job_services.job_continue_claim(job_id=job_id, worker=self.request.hostname or "")
        if job is None:
            logger.info("Job %s is not waiting for its last step; skipped", job_id)
            return {"skipped": True}
        return self._run_claimed(job, service)

    def _run_claimed(self, job: Job, service: JobService) -> dict[str, Any]:
        soft_limit = self.soft_time_limit or self.app.conf.task_soft_time_limit
        reporter = job_services.JobReporter(
            job.pk, deadline=time.monotonic() + soft_limit if soft_limit else None
        )
        # What the job writes is in the audit trail under the user who started it.
        with job_services.JobHeartbeat(job.pk), audit_actor(job.created_by):
            result = service(job=job, progress=reporter)
        if result.get(job_services.JOB_CONTINUES):
            return result  # handed to its chunks (job_hand_off); the last step marks it
        job_services.job_succeed(
            job_id=job.pk, result=result, message=result.get("message", "Done")
        )
        return result

    def retry(
        self, args: Any = None, kwargs: Any = None, exc: BaseException | None = None, **options: Any
    ) -> Any:
        # Put the row back to queued first, so that the retried run (same task id) can claim it.
        job_id = self._job_id(args)
        retries_left = self.max_retries is None or self.request.retries < self.max_retries
        if job_id is not None and exc is not None and retries_left:
            countdown = options.get("countdown") or self.retry_backoff
            job_services.job_requeue_for_retry(
                job_id=job_id, error=f"{type(exc).__name__}: {exc}", countdown=countdown
            )
        return super().retry(args=args, kwargs=kwargs, exc=exc, **options)

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        job_id = self._job_id(args)
        if job_id is None:
            return
        if isinstance(exc, job_services.JobAbandoned):
            return  # already marked (stale or cancelled) by whoever abandoned it
        summary = job_error_summary(exc)
        detail = str(einfo.traceback) if einfo is not None else traceback.format_exc()
        job_services.job_fail(job_id=job_id, error=f"{summary}\n\n{detail}", message=summary[:500])

    def _job_id(self, args: Any) -> int | None:
        args = args if args is not None else self.request.args
        if args:
            try:
                return int(args[0])
            except (TypeError, ValueError):
                return None
        return None


def job_error_summary(exc: BaseException) -> str:
    from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

    if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
        return "The job ran past its time limit and was stopped."
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


class ChunkTask(JobTask):
    """A share of a running job (one feature chunk), or the step after its chunks.

    Their messages are acknowledged late and, for a prefork pool, rejected back to the queue
    when the worker process dies; a solo-pool worker that dies leaves its message
    unacknowledged, and the Redis broker gives it to another worker after its visibility
    timeout (``FUNDUS_BROKER_VISIBILITY_SECONDS``). A chunk is idempotent (the manifest skips
    keys already present), so a redelivery repeats at most one chunk's work. Results are kept:
    the chord counts them to know when every chunk has run.
    """

    acks_late = True
    reject_on_worker_lost = True
    ignore_result = False

    def retry(
        self, args: Any = None, kwargs: Any = None, exc: BaseException | None = None, **options: Any
    ) -> Any:
        # The job stays running while one of its chunks waits for another try.
        return Task.retry(self, args=args, kwargs=kwargs, exc=exc, **options)


@shared_task(bind=True, base=ChunkTask, name="grading.tasks.features_chunk")
def features_chunk(self: ChunkTask, job_id: int, chunk_id: int) -> dict[str, Any]:
    return features.features_chunk_run(
        job_id=job_id, chunk_id=chunk_id, worker=self.request.hostname or ""
    )


@shared_task(bind=True, base=ChunkTask, name="grading.tasks.model_train_continue")
def model_train_continue(self: ChunkTask, job_id: int) -> dict[str, Any]:
    return self.continue_job(job_id, model_training.model_train_continue_job)


@shared_task(bind=True, base=ChunkTask, name="grading.tasks.features_extract_continue")
def features_extract_continue(self: ChunkTask, job_id: int) -> dict[str, Any]:
    return self.continue_job(job_id, features.features_extract_continue_job)


@shared_task(bind=True, base=ChunkTask, name="grading.tasks.images_predict_continue")
def images_predict_continue(self: ChunkTask, job_id: int) -> dict[str, Any]:
    return self.continue_job(job_id, predictions.images_predict_continue_job)


@shared_task(bind=True, base=JobTask, name="grading.tasks.features_extract")
def features_extract(self: JobTask, job_id: int) -> dict[str, Any]:
    return self.run_job(job_id, features.features_extract_job)


@shared_task(bind=True, base=JobTask, name="grading.tasks.images_augment")
def images_augment(self: JobTask, job_id: int) -> dict[str, Any]:
    return self.run_job(job_id, features.images_augment_job)


@shared_task(bind=True, base=JobTask, name="grading.tasks.model_train")
def model_train(self: JobTask, job_id: int) -> dict[str, Any]:
    return self.run_job(job_id, model_training.model_train_job)


@shared_task(bind=True, base=JobTask, name="grading.tasks.model_evaluate")
def model_evaluate(self: JobTask, job_id: int) -> dict[str, Any]:
    return self.run_job(job_id, model_evaluation.model_evaluate_job)


@shared_task(bind=True, base=JobTask, name="grading.tasks.predictions_refresh")
def predictions_refresh(self: JobTask, job_id: int) -> dict[str, Any]:
    return self.run_job(job_id, predictions.predictions_refresh_job)


@shared_task(bind=True, base=JobTask, name="grading.tasks.images_predict")
def images_predict(self: JobTask, job_id: int) -> dict[str, Any]:
    return self.run_job(job_id, predictions.images_predict_job)


@shared_task(bind=True, base=JobTask, name="grading.tasks.images_import")
def images_import(self: JobTask, job_id: int) -> dict[str, Any]:
    return self.run_job(job_id, uploads.upload_staged_import_job)


@shared_task(
    name=renderings.RENDER_TASK,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=5,
    max_retries=3,
    acks_late=True,
    ignore_result=True,
)
def image_views_render(image_id: int) -> dict[str, Any]:
    """Render a new photograph's viewer views (cropped, red-free, Ben Graham, thumbnail).

    Deliberately not a Job: a cache fill of a second or two per upload that nobody waits for,
    cancels or retries by hand would bury the Jobs page. Idempotent: cached views are skipped,
    and a view requested before this ran is rendered by the request itself.
    """
    image = Image.objects.filter(pk=image_id).first()
    if image is None:
        return {"rendered": [], "message": "The image no longer exists"}
    try:
        rendered = renderings.image_views_render(image=image)
    except renderings.RenderingFailed as error:
        logger.warning("Views of image %s not rendered: %s", image_id, error)
        return {"rendered": [], "message": str(error)}
    return {"rendered": rendered}


@shared_task(name="grading.tasks.jobs_housekeeping", ignore_result=True)
def jobs_housekeeping(*, now: dt.datetime | None = None) -> dict[str, Any]:
    """Periodic (beat): fail jobs whose worker died, remove what interrupted uploads left, and
    start an automatic retrain when due. ``now``: the clock of the staleness check (tests)."""
    marked = job_services.jobs_mark_stale(now=now)
    uploads.uploads_leftovers_remove()
    auto_job = None
    try:
        auto_job = model_versions.model_auto_retrain_check()
    except job_services.QueueUnavailable:
        logger.warning("Automatic retraining is due but the queue is unavailable")
    try:
        model_evaluation.model_evaluation_catch_up()
    except job_services.QueueUnavailable:
        logger.warning("A version waits for its cross-validation but the queue is unavailable")
    return {"stale_marked": marked, "auto_retrain_job": auto_job.pk if auto_job else None}


# Connected here rather than in grading/celery.py, which the services import: every worker
# imports this module (autodiscovery) before it reports ready.
@worker_ready.connect
def _jobs_recover_on_worker_start(sender: Any = None, **kwargs: Any) -> None:
    """A worker that starts cannot be running anything yet: jobs still marked as running on a
    worker of the same name were abandoned when its previous process died."""
    hostname = getattr(sender, "hostname", None)
    if not hostname:
        return
    try:
        marked = job_services.jobs_mark_stale(restarted_worker=hostname)
    except Exception:  # a worker must start even if the database is briefly unreachable
        logger.exception("Could not check for jobs abandoned by a previous %s", hostname)
        return
    finally:
        # Opened in the consumer's thread (before a prefork pool forks): never share it.
        connection.close()
    if marked:
        logger.warning("Marked %d job(s) abandoned by a previous %s as failed", marked, hostname)


# One per heartbeat thread this process started (a test process starts several workers).
_heartbeat_stops: list[threading.Event] = []


@worker_init.connect
def _heartbeat_on_worker_start(sender: Any = None, **kwargs: Any) -> None:
    """Beat for the queues this worker consumes: /readyz wants a live ML worker. (worker_init,
    not worker_ready: only the command-line worker sends the latter.)"""
    consume_from = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    queues = sorted(getattr(consume_from, "consume_from", None) or {})
    if queues:
        stop = threading.Event()
        _heartbeat_stops.append(stop)
        worker_heartbeat.worker_heartbeat_start(queues=queues, stop=stop)


@worker_shutdown.connect
def _heartbeat_on_worker_stop(**kwargs: Any) -> None:
    while _heartbeat_stops:
        _heartbeat_stops.pop().set()


__all__ = [
    "ChunkTask",
    "JobTask",
    "Job",
    "features_chunk",
    "features_extract",
    "features_extract_continue",
    "image_views_render",
    "images_augment",
    "images_import",
    "images_predict",
    "images_predict_continue",
    "jobs_housekeeping",
    "model_evaluate",
    "model_train",
    "model_train_continue",
    "predictions_refresh",
]
