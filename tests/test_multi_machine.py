"""Several machines that share only PostgreSQL, Redis and S3 (SeaweedFS), on this machine.

Real processes, each with its own empty folders: two web servers (gunicorn), two ML workers
(`celery worker --pool solo`) and the admin's `manage.py retrain --wait`. Nothing on disk is
shared between them: every photograph, render, model and feature they exchange goes through
the bucket, and every record through the test database. Checked:

- a photograph uploaded through web A is shown and graded through web B;
- a retrain's feature chunks run on both workers, and its progress counts chunks;
- a worker killed (SIGKILL) in the middle of a chunk does not sink the job: its chunk is
  redelivered to the other worker, and every image's features are in the manifest exactly once;
- the candidate predicts through either worker (the one that trained it, and a fresh one).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from django.db import connection
from django.test import TransactionTestCase

from grading.models import FeatureChunk, FeatureShardRow, Grade, Image, Job, ModelVersion
from grading.services import feature_shards, ml_config
from grading.services.jobs import job_enqueue
from tests import factories_jobs
from tests.factories import fundus_jpeg_bytes, user_make
from tests.factories_jobs import (
    TEST_BROKER_URL,
    TEST_KEY_PREFIX,
    BrokerMixin,
    TrainingMixin,
    confirmed_images_make,
    job_wait,
    subprocess_worker,
    wait_until,
    worker_log,
)
from tests.s3 import free_ports, s3_environment

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGES = 24
CHUNK_IMAGES = 2  # 12 chunks: enough for both workers to take several
# A killed worker's chunk comes back after this (the broker's visibility timeout).
VISIBILITY_SECONDS = 30
PASSWORD = "multi-machine-pass-123"


class _Machine:
    """One machine's private folders (a web server's MEDIA_ROOT, a worker's caches)."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.root = root / name
        self.env = {
            "MEDIA_ROOT": str(self.root / "media"),
            "FUNDUS_FEATURE_STORE": str(self.root / "features"),
            "FUNDUS_MODEL_DIR": str(self.root / "models"),
            "FUNDUS_UPLOAD_STAGING_DIR": str(self.root / "staging"),
            "FILE_UPLOAD_TEMP_DIR": str(self.root / "upload-tmp"),
        }


@pytest.mark.slow
@pytest.mark.worker
@pytest.mark.usefixtures("s3_bucket_class")
class MultiMachineTests(TrainingMixin, BrokerMixin, TransactionTestCase):
    tmp_prefix = "funduscope-machines-"
    train_epochs = 4
    embedded_worker = False

    def setUp(self):
        if connection.vendor != "postgresql":
            pytest.skip(
                "several machines share one PostgreSQL database; SQLite is a file on one machine"
            )
        super().setUp()
        self.shared_env = {
            "DATABASE_URL": factories_jobs.tests_database_url(),
            "REDIS_URL": TEST_BROKER_URL,
            "FUNDUS_REDIS_KEY_PREFIX": TEST_KEY_PREFIX,
            **s3_environment(self.s3, self.bucket),
            "FUNDUS_WEIGHTS_DIR": str(settings.FUNDUS_WEIGHTS_DIR),
            "FUNDUS_BACKBONES": ",".join(settings.FUNDUS_BACKBONES),
            "FUNDUS_TRAIN_EPOCHS": str(self.train_epochs),
            "FUNDUS_CV_FOLDS": "3",
            "FUNDUS_BOOTSTRAP_RESAMPLES": "200",
            "FUNDUS_FEATURE_CHUNK_IMAGES": str(CHUNK_IMAGES),
            "FUNDUS_BROKER_VISIBILITY_SECONDS": str(VISIBILITY_SECONDS),
            "FUNDUS_QUALITY_GATE": "0",
            "PYTHONUNBUFFERED": "1",
        }

    # -- processes ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def web_server(self, machine: _Machine, port: int) -> Iterator[str]:
        env = {**os.environ, **self.shared_env, **machine.env}
        log = self._tmp / f"{machine.name}.log"
        command = [
            sys.executable, "-m", "gunicorn", "grading.wsgi:application",
            "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4",
        ]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(
                lambda: _answers(f"{url}/healthz") or process.poll() is not None,
                timeout=120,
                interval=0.3,
                what=f"web server {machine.name}",
            )
            self.assertIsNone(process.poll(), log.read_text(errors="replace"))
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def ml_worker(self, machine: _Machine) -> contextlib.AbstractContextManager:
        name = f"{machine.name}-{uuid.uuid4().hex[:6]}@localhost-test"
        machine.worker_name = name  # type: ignore[attr-defined]
        return subprocess_worker(
            name=name,
            extra_env={**self.shared_env, **machine.env},
            log_path=self._tmp / f"{machine.name}.log",
        )

    def wait_ready(self, *workers: subprocess.Popen) -> None:
        for worker in workers:
            wait_until(
                lambda worker=worker: " ready." in worker_log(worker) or worker.poll() is not None,
                timeout=180,
                interval=0.3,
                what="a worker to be ready",
            )
            self.assertIsNone(worker.poll(), worker_log(worker))

    # -- the test -------------------------------------------------------------------------------
    def test_web_servers_and_ml_workers_share_only_the_database_redis_and_the_bucket(self):
        carla = user_make("carla", "clinician")
        # The web servers check passwords with the production hashers (the tests use MD5).
        carla.password = make_password(PASSWORD, hasher=PBKDF2PasswordHasher())
        carla.save(update_fields=["password"])
        confirmed_images_make(IMAGES, patients=12)
        root = self._tmp / "machines"
        web_a, web_b = _Machine(root, "web-a"), _Machine(root, "web-b")
        ml_1, ml_2, ml_3 = (_Machine(root, name) for name in ("ml-1", "ml-2", "ml-3"))
        port_a, port_b = free_ports(2)

        with self.web_server(web_a, port_a) as url_a, self.web_server(web_b, port_b) as url_b:
            self.check_upload_on_a_is_graded_on_b(url_a, url_b, web_a, web_b)

        with self.ml_worker(ml_1) as worker_1, self.ml_worker(ml_2) as worker_2:
            self.wait_ready(worker_1, worker_2)
            job = self.retrain_killing_a_worker_mid_chunk(worker_1, worker_2, ml_1, ml_2)
            self.check_features_present_exactly_once(job)
            candidate = ModelVersion.objects.get(pk=job.result["model_version_id"])
            self.assertEqual(candidate.state, ModelVersion.State.CANDIDATE)
            # It predicted every image on the worker that trained it.
            self.assertEqual(candidate.predictions.count(), Image.objects.count())
            self.assertTrue(job.worker.startswith("ml-1-"), job.worker)
            # Wait for its cross-validation before this worker stops.
            evaluation = Job.objects.get(kind=Job.Kind.MODEL_EVALUATE, model_version=candidate)
            job_wait(evaluation, states=(Job.State.SUCCEEDED, Job.State.FAILED), timeout=300)
            self.assertEqual(evaluation.state, Job.State.SUCCEEDED, evaluation.error)
            # Incremental: an extraction of every image computes what the retrain did not
            # need (if anything); a second one finds everything published and does nothing.
            for _run in ("first", "second"):
                extraction, _ = job_enqueue(kind=Job.Kind.FEATURES_EXTRACT)
                job_wait(extraction, states=(Job.State.SUCCEEDED, Job.State.FAILED), timeout=180)
                self.assertEqual(extraction.state, Job.State.SUCCEEDED, extraction.error)
            self.assertEqual((extraction.result["chunks"], extraction.result["computed"]), (0, 0))
            self.assertFalse(FeatureChunk.objects.filter(job=extraction).exists())

        # A fresh worker (empty caches) predicts with the candidate: the model comes from the
        # bucket, and so do the photograph and its features.
        fresh = Image.objects.order_by("id").first()
        candidate.predictions.filter(image=fresh).delete()
        with self.ml_worker(ml_3) as worker_3:
            predict, _ = job_enqueue(
                kind=Job.Kind.IMAGES_PREDICT,
                params={"image_ids": [fresh.pk], "model_version_id": candidate.pk},
            )
            job_wait(predict, states=(Job.State.SUCCEEDED, Job.State.FAILED), timeout=240)
            self.assertEqual(
                predict.state, Job.State.SUCCEEDED, predict.error + worker_log(worker_3)
            )
        self.assertTrue(predict.worker.startswith("ml-3-"), predict.worker)
        self.assertTrue(candidate.predictions.filter(image=fresh).exists())
        self.assertTrue((ml_3.root / "models" / candidate.name / "metadata.json").is_file())

    def check_upload_on_a_is_graded_on_b(
        self, url_a: str, url_b: str, web_a: _Machine, web_b: _Machine
    ) -> None:
        photograph = fundus_jpeg_bytes(seed=424242, framed=True)
        on_a = _signed_in(url_a, "carla")
        response = on_a.post(
            f"{url_a}/upload/",
            data={"patient_id": "MM-1", "eye": "R", "csrfmiddlewaretoken": _csrf(on_a, url_a)},
            files={"files": ("visit.jpg", photograph, "image/jpeg")},
            headers={"Referer": f"{url_a}/upload/"},
            timeout=60,
        )
        self.assertEqual(response.status_code, 200, response.text[:2000])
        image = Image.objects.get(patient__pseudonym="MM-1")
        self.assertFalse((web_b.root / "media" / image.file.name).exists())

        on_b = _signed_in(url_b, "carla")
        shown = on_b.get(f"{url_b}/images/{image.pk}/file", timeout=30)
        self.assertEqual(shown.status_code, 200)
        self.assertEqual(shown.content, photograph)
        page = on_b.get(f"{url_b}/grade/{image.pk}/", timeout=30)
        self.assertEqual(page.status_code, 200, page.text[:2000])
        view = on_b.get(f"{url_b}/images/{image.pk}/view/cropped.png", timeout=60)
        self.assertEqual(view.status_code, 200)
        graded = on_b.post(
            f"{url_b}/grade/{image.pk}/",
            data={"grade": "2", "csrfmiddlewaretoken": _csrf(on_b, f"{url_b}/grade/{image.pk}/")},
            headers={"Referer": f"{url_b}/grade/{image.pk}/"},
            timeout=30,
        )
        self.assertLess(graded.status_code, 400, graded.text[:2000])
        grade = Grade.objects.get(image=image, grader__username="carla")
        self.assertEqual(grade.grade.value, 2)
        # Anonymous on web B: the photograph is not served.
        self.assertIn(
            "/accounts/login/",
            requests.get(
                f"{url_b}/images/{image.pk}/file", timeout=30, allow_redirects=False
            ).headers.get("Location", ""),
        )

    def retrain_killing_a_worker_mid_chunk(
        self,
        worker_1: subprocess.Popen,
        worker_2: subprocess.Popen,
        ml_1: _Machine,
        ml_2: _Machine,
    ) -> Job:
        env = {**os.environ, **self.shared_env, **ml_1.env}
        retrain = subprocess.Popen(
            [sys.executable, "manage.py", "retrain", "--mode", "head", "--wait", "--poll", "0.3"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            job = wait_until(
                lambda: Job.objects.filter(kind=Job.Kind.MODEL_TRAIN).first(),
                timeout=60,
                what="the retrain job",
            )
            name_2 = ml_2.worker_name  # type: ignore[attr-defined]

            def second_worker_busy_after_a_chunk() -> bool:
                chunks = FeatureChunk.objects.filter(job=job)
                done_by_2 = chunks.filter(state=FeatureChunk.State.DONE, worker=name_2)
                running_on_2 = chunks.filter(state=FeatureChunk.State.RUNNING, worker=name_2)
                return done_by_2.exists() and running_on_2.exists()

            wait_until(
                second_worker_busy_after_a_chunk,
                timeout=300,
                interval=0.02,
                what="worker 2 to take a second chunk",
            )
            worker_2.send_signal(signal.SIGKILL)
            worker_2.wait(timeout=30)
            killed_chunk = FeatureChunk.objects.get(
                job=job, state=FeatureChunk.State.RUNNING, worker=name_2
            )
            output, _ = retrain.communicate(timeout=600)
        finally:
            if retrain.poll() is None:
                retrain.kill()
        self.assertEqual(retrain.returncode, 0, output + worker_log(worker_1))
        self.assertIn("chunks extracted", output)  # its progress counted chunks
        self.assertRegex(output, r"succeeded")
        job.refresh_from_db()
        self.assertEqual(job.state, Job.State.SUCCEEDED, job.error)
        killed_chunk.refresh_from_db()
        self.assertEqual(killed_chunk.state, FeatureChunk.State.DONE)
        self.assertTrue(killed_chunk.worker.startswith("ml-1-"), killed_chunk.worker)
        self.assertGreaterEqual(killed_chunk.attempts, 2)
        by_worker = job.result["chunks_by_worker"]
        # Every confirmed image (the 24 and web A's upload, which carla's grade confirmed) in
        # chunks of CHUNK_IMAGES, each counted once whoever ran it last.
        confirmed = Image.objects.filter(grading_state=Image.GradingState.CONFIRMED).count()
        self.assertEqual(sum(by_worker.values()), -(-confirmed // CHUNK_IMAGES), by_worker)
        self.assertTrue(any(re.match("ml-1-", name) for name in by_worker), by_worker)
        self.assertTrue(any(re.match("ml-2-", name) for name in by_worker), by_worker)
        return job

    def check_features_present_exactly_once(self, job: Job) -> None:
        from mlcore.features.store import feature_key

        (config_key,) = feature_shards.config_keys(ml_config.feature_config()).values()
        rows = FeatureShardRow.objects.filter(config_key=config_key)
        expected = {
            feature_key(sha)
            for sha in Image.objects.filter(grading_state=Image.GradingState.CONFIRMED).values_list(
                "sha256", flat=True
            )
        }
        self.assertGreaterEqual(len(expected), IMAGES)
        keys = list(rows.values_list("key", flat=True))
        self.assertEqual(len(keys), len(set(keys)))  # once each (also a unique constraint)
        self.assertEqual(set(keys), expected)
        # Every row points at a shard that is in the bucket.
        from tests.s3 import bucket_keys

        stored = set(bucket_keys(self.s3, self.bucket, "features/"))
        self.assertLessEqual(set(rows.values_list("shard", flat=True)), stored)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _csrf(session: requests.Session, page: str) -> str:
    session.get(page if page.startswith("http") else f"{page}/", timeout=30)
    return session.cookies.get("csrftoken", "")


def _signed_in(url: str, username: str) -> requests.Session:
    session = requests.Session()
    token = _csrf(session, f"{url}/accounts/login/")
    response = session.post(
        f"{url}/accounts/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{url}/accounts/login/"},
        timeout=30,
    )
    assert response.status_code == 200 and "sessionid" in session.cookies, response.text[:1000]
    return session
