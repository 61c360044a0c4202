"""A fine-tuning worker killed (SIGKILL) in the middle of an epoch: the job is detected as failed,
the active model is untouched, and the retry resumes from the last completed epoch's checkpoint.

The worker is a real `celery worker` subprocess (solo pool, like `make run`'s ML worker) on the
test database and the test Redis database. The network is EfficientNet-Lite0 trained whole on a
handful of small images (4 per batch), so that an epoch lasts long enough to be killed in.
"""

from __future__ import annotations

import datetime as dt
import signal
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.test import TransactionTestCase, override_settings
from django.utils import timezone

from grading.models import Job, ModelVersion
from grading.services import jobs as job_services
from grading.services import model_versions as version_services
from grading.tasks import jobs_housekeeping
from tests.factories import user_make
from tests.factories_jobs import (
    FINISHED,
    BrokerMixin,
    TrainingMixin,
    confirmed_images_make,
    job_wait,
    model_version_make,
    subprocess_worker,
    wait_until,
    worker_log,
)

STALE_SECONDS = 4
FINETUNE_ENV = {
    "FUNDUS_FINETUNE_BACKBONE": "efficientnet_lite0",
    "FUNDUS_FINETUNE_TOP_BLOCKS": "all",
    "FUNDUS_FINETUNE_EPOCHS": "3",
    "FUNDUS_FINETUNE_BATCH_SIZE": "4",
    "FUNDUS_FINETUNE_LEARNING_RATES": "1e-4",
}


def _checkpoints() -> list[Path]:
    root = Path(settings.FUNDUS_MODEL_DIR) / "finetune-checkpoints"
    return sorted(root.glob("*/candidate-0/epoch-*")) if root.is_dir() else []


@pytest.mark.slow
@override_settings(FUNDUS_JOB_HEARTBEAT_SECONDS=1, FUNDUS_JOB_STALE_SECONDS=STALE_SECONDS)
class KilledFinetuneWorkerTests(TrainingMixin, BrokerMixin, TransactionTestCase):
    tmp_prefix = "funduscope-finetune-killed-"
    embedded_worker = False  # each run starts (and kills) its own worker process

    def test_a_fine_tuning_worker_killed_mid_epoch_resumes_from_its_checkpoint(self):
        adam = user_make("adam", "admin")
        confirmed_images_make()
        active_dir = self._tmp / "models" / "v1"
        active = model_version_make("v1", state=ModelVersion.State.ACTIVE, artifact_dir=active_dir)
        ModelVersion.objects.filter(pk=active.pk).update(activated_at=timezone.now())
        active.refresh_from_db()
        active_files = {p.name: p.read_bytes() for p in active_dir.iterdir()}
        name = f"finetunekill-{uuid.uuid4().hex[:6]}@%h"
        messages: list[str] = []

        job, _ = version_services.model_retrain_request(user=adam, mode="finetune")
        with subprocess_worker(name=name, extra_env=FINETUNE_ENV) as worker:

            def in_second_epoch() -> bool:
                row = Job.objects.get(pk=job.pk)
                messages.append(row.message)
                self.assertIsNone(worker.poll(), worker_log(worker))
                self.assertNotEqual(row.state, Job.State.FAILED, row.error)
                return "epoch 2/3" in row.message

            wait_until(in_second_epoch, timeout=300, interval=0.1, what="the second epoch")
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
        self.assertTrue(any("ETA" in m for m in messages), messages)
        self.assertEqual([p.name for p in _checkpoints()], ["epoch-001"])

        later = timezone.now() + dt.timedelta(seconds=STALE_SECONDS + 1)
        self.assertEqual(jobs_housekeeping(now=later)["stale_marked"], 1)
        job.refresh_from_db()
        self.assertEqual(job.state, Job.State.FAILED)
        half_made = job.model_version
        half_made.refresh_from_db()
        self.assertEqual(half_made.state, ModelVersion.State.FAILED)
        active.refresh_from_db()
        self.assertEqual(active.state, ModelVersion.State.ACTIVE)
        self.assertEqual({p.name: p.read_bytes() for p in active_dir.iterdir()}, active_files)

        again = job_services.job_retry(job=job, user=adam)
        self.assertEqual(again.params["mode"], "finetune")
        with subprocess_worker(name=name, extra_env=FINETUNE_ENV) as worker:
            job_wait(again, states=FINISHED, timeout=400)
            self.assertEqual(again.state, Job.State.SUCCEEDED, again.error + worker_log(worker))
        self.assertEqual(again.result["resumed_from_epoch"], 1)
        self.assertEqual(again.result["mode"], "finetune")
        candidate = ModelVersion.objects.get(pk=again.result["model_version_id"])
        self.assertEqual(candidate.state, ModelVersion.State.CANDIDATE)
        self.assertEqual(candidate.metrics["mode"], "finetune")
        self.assertEqual(candidate.predictions.count(), 20)
        self.assertEqual(_checkpoints(), [])  # removed once the model was saved
        active.refresh_from_db()
        self.assertEqual(active.state, ModelVersion.State.ACTIVE)
        self.assertEqual({p.name: p.read_bytes() for p in active_dir.iterdir()}, active_files)
