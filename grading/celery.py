"""The Celery app: Redis broker and result store, two queues (`default`, `ml`).

Configuration comes from Django settings (``CELERY_*``): JSON only, late acknowledgement, soft and
hard time limits. Tasks that load TensorFlow go to the `ml` queue, whose worker runs with
``--pool solo``: TensorFlow and forked pool workers deadlock together. Everything else (the
periodic housekeeping) goes to `default`.

Nothing here reads Django settings at import time: this module is imported while the settings
themselves are being imported (``grading/__init__.py``), so settings are read lazily.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from kombu import Queue

# Connects the job-event log lines and carries a request's id into the tasks it enqueues.
import grading.request_log  # noqa: F401

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grading.settings")

DEFAULT_QUEUE = "default"
ML_QUEUE = "ml"
# Tasks that import TensorFlow: they must run in the solo-pool `ml` worker.
ML_TASKS = (
    "grading.tasks.features_chunk",
    "grading.tasks.features_extract",
    "grading.tasks.features_extract_continue",
    "grading.tasks.images_augment",
    "grading.tasks.model_train",
    "grading.tasks.model_train_continue",
    "grading.tasks.model_evaluate",
    "grading.tasks.predictions_refresh",
    "grading.tasks.images_predict",
    "grading.tasks.images_predict_continue",
)
TRAINING_TASKS = (
    "grading.tasks.model_train",
    "grading.tasks.model_train_continue",
    "grading.tasks.model_evaluate",
)
# How often beat runs the housekeeping task (stale jobs, automatic retraining). A job is declared
# stale only after settings.FUNDUS_JOB_STALE_SECONDS without a heartbeat, so this is only the
# detection delay on top of that.
HOUSEKEEPING_SECONDS = 60.0


class TrainingTimeLimits:
    """Task annotation: training gets the longer ``CELERY_TRAINING_*`` time limits.

    An annotation object (not a dict) so that the settings are read when tasks are bound, after
    Django is configured, not when this module is imported.
    """

    def annotate(self, task: Any) -> dict[str, int] | None:
        if task.name not in TRAINING_TASKS:
            return None
        from django.conf import settings

        return {
            "soft_time_limit": settings.CELERY_TRAINING_SOFT_TIME_LIMIT,
            "time_limit": settings.CELERY_TRAINING_TIME_LIMIT,
        }

    def annotate_any(self) -> None:
        return None


app = Celery("grading")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_queues=(Queue(DEFAULT_QUEUE), Queue(ML_QUEUE)),
    task_default_queue=DEFAULT_QUEUE,
    task_routes={name: {"queue": ML_QUEUE} for name in ML_TASKS},
    task_annotations=[TrainingTimeLimits()],
    beat_schedule={
        "jobs-housekeeping": {
            "task": "grading.tasks.jobs_housekeeping",
            "schedule": HOUSEKEEPING_SECONDS,
            # A backlog of housekeeping runs is useless: only the latest one matters.
            "options": {"expires": HOUSEKEEPING_SECONDS},
        }
    },
)
app.autodiscover_tasks()
