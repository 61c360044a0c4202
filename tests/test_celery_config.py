"""Celery configuration: JSON only, two queues with TensorFlow tasks on `ml`, time limits (longer
for training), the periodic housekeeping, and the web process never loading TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings
from django.test import SimpleTestCase

from grading.celery import HOUSEKEEPING_SECONDS, ML_TASKS
from grading.celery import app as celery_app
from tests.conftest import REPO_ROOT


class CeleryConfigTests(SimpleTestCase):
    def test_it_speaks_json_only(self):
        self.assertEqual(celery_app.conf.task_serializer, "json")
        self.assertEqual(celery_app.conf.result_serializer, "json")
        self.assertEqual(list(celery_app.conf.accept_content), ["json"])

    def test_tensorflow_tasks_go_to_the_ml_queue_and_housekeeping_to_default(self):
        router = celery_app.amqp.router
        for name in ML_TASKS:
            with self.subTest(task=name):
                self.assertEqual(router.route({}, name)["queue"].name, "ml")
        self.assertEqual(
            router.route({}, "grading.tasks.jobs_housekeeping")["queue"].name, "default"
        )
        self.assertEqual({queue.name for queue in celery_app.conf.task_queues}, {"default", "ml"})

    def test_training_gets_the_longer_time_limits(self):
        celery_app.loader.import_default_modules()
        train = celery_app.tasks["grading.tasks.model_train"]
        predict = celery_app.tasks["grading.tasks.images_predict"]
        self.assertEqual(train.soft_time_limit, settings.CELERY_TRAINING_SOFT_TIME_LIMIT)
        self.assertEqual(train.time_limit, settings.CELERY_TRAINING_TIME_LIMIT)
        self.assertEqual(celery_app.conf.task_soft_time_limit, settings.CELERY_TASK_SOFT_TIME_LIMIT)
        self.assertEqual(celery_app.conf.task_time_limit, settings.CELERY_TASK_TIME_LIMIT)
        self.assertNotEqual(predict.soft_time_limit, train.soft_time_limit)
        self.assertGreater(train.soft_time_limit, settings.CELERY_TASK_SOFT_TIME_LIMIT)

    def test_job_tasks_acknowledge_late_and_retry_transient_errors_with_backoff(self):
        from django.db import OperationalError

        celery_app.loader.import_default_modules()
        task = celery_app.tasks["grading.tasks.model_train"]
        self.assertTrue(task.acks_late)
        self.assertIn(OperationalError, task.autoretry_for)
        self.assertTrue(task.retry_backoff)
        self.assertEqual(task.max_retries, 3)

    def test_beat_runs_the_housekeeping_periodically(self):
        entry = celery_app.conf.beat_schedule["jobs-housekeeping"]
        self.assertEqual(entry["task"], "grading.tasks.jobs_housekeeping")
        self.assertEqual(entry["schedule"], HOUSEKEEPING_SECONDS)

    def test_the_web_side_imports_no_tensorflow(self):
        code = (
            "import django, sys; django.setup();"
            "import grading.urls, grading.tasks, grading.services.predictions,"
            " grading.services.model_versions, grading.services.features, grading.views.models;"
            "from grading.celery import app; app.loader.import_default_modules();"
            "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "grading.settings",
            },
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip().splitlines()[-1], "False")
