"""Test support for jobs: a dedicated Redis database, real Celery workers, model version rows.

Tests use a real Redis: database 15 by default (``FUNDUS_TEST_REDIS_URL``), so that development
workers listening on database 0 never take test tasks, and a key prefix unique to this test run,
so that two test runs at once (SQLite and PostgreSQL, or two people) never take each other's
tasks either. Workers are real: in a thread of the test process (``thread_worker``) or in a
subprocess (``subprocess_worker``) when a test must kill one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery.signals import task_postrun
from django.conf import settings
from django.db import connection, connections
from django.test import override_settings

from grading.celery import DEFAULT_QUEUE, ML_QUEUE
from grading.celery import app as celery_app
from grading.models import GradeLevel, Image, Job, ModelVersion
from grading.services.images import image_create, image_validate
from tests.conftest import WEIGHTS_DIR
from tests.factories import fundus_jpeg_bytes, patient_make

FINISHED = (Job.State.SUCCEEDED, Job.State.FAILED)
REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_BROKER_URL = os.environ.get("FUNDUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TEST_KEY_PREFIX = f"funduscope-test-{os.getpid()}-{uuid.uuid4().hex[:8]}:"
# Nothing listens here: stands for "Redis is down" without stopping the shared server.
DEAD_BROKER_URL = "redis://127.0.0.1:6390/0"


def _reset_celery_connections() -> None:
    from kombu import pools

    pools.reset()  # closes and forgets kombu's connection and producer pools
    celery_app._after_fork()  # and the app's references to them


@contextlib.contextmanager
def use_broker(url: str, *, key_prefix: str = TEST_KEY_PREFIX) -> Iterator[None]:
    """Point the Celery app (and so ``queue_check``) at ``url`` for the duration, its queue keys
    prefixed with ``key_prefix``."""
    conf = celery_app.conf
    saved = (conf.broker_url, conf.result_backend, conf.broker_transport_options)
    conf.broker_url = url
    conf.result_backend = url
    conf.broker_transport_options = {**saved[2], "global_keyprefix": key_prefix}
    _reset_celery_connections()
    try:
        yield
    finally:
        conf.broker_url, conf.result_backend, conf.broker_transport_options = saved
        _reset_celery_connections()


class BrokerMixin:
    """Test classes using the dedicated test Redis database (flushed before the class)."""

    broker_url = TEST_BROKER_URL

    @classmethod
    def setUpClass(cls):
        redis_flush(cls.broker_url)
        cls._broker = use_broker(cls.broker_url)
        cls._broker.__enter__()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls._broker.__exit__(None, None, None)
        redis_flush(cls.broker_url)


class TrainingMixin:
    """Test classes that extract features, train and predict for real: the offline MobileNetV2
    weights (the class is skipped without them), and a temporary folder of its own for the
    photographs, the feature store and the model versions, removed after the class. With
    ``embedded_worker`` a Celery worker runs in a thread for the whole class.

    List it first among the bases (before ``BrokerMixin`` and the test case class): the settings
    are in force before the test case sets up, and the worker starts after the broker is set.
    """

    tmp_prefix = "funduscope-training-"
    train_epochs = 6
    embedded_worker = True
    serialized_rollback = True  # keep the roles and grade scale written by data migrations

    @classmethod
    def setUpClass(cls):
        if not WEIGHTS_DIR.is_dir():
            raise pytest.skip.Exception(f"offline weights not found at {WEIGHTS_DIR}")
        cls._tmp = Path(tempfile.mkdtemp(prefix=cls.tmp_prefix))
        # The feature store is shared by the tests of the class: features are cached by content.
        # (A BrowserTestCase then points MEDIA_ROOT at its own folder for the live server.)
        cls._settings = override_settings(
            MEDIA_ROOT=str(cls._tmp / "media"),
            FUNDUS_FEATURE_STORE=cls._tmp / "features",
            FUNDUS_MODEL_DIR=cls._tmp / "models",
            FUNDUS_WEIGHTS_DIR=WEIGHTS_DIR,
            FUNDUS_BACKBONES=["mobilenet_v2"],
            FUNDUS_TRAIN_EPOCHS=cls.train_epochs,
            FUNDUS_CV_FOLDS=3,
            FUNDUS_BOOTSTRAP_RESAMPLES=200,
        )
        cls._settings.enable()
        super().setUpClass()
        if cls.embedded_worker:
            cls._worker = thread_worker()
            cls._worker.__enter__()

    def tearDown(self):
        # A retrain queues its version's cross-validation: let the embedded worker finish what
        # is open before the test database is flushed under it.
        if self.embedded_worker:
            wait_until(
                lambda: (
                    not Job.objects.filter(
                        state__in=(Job.State.QUEUED, Job.State.RUNNING),
                        kind__in=(Job.Kind.MODEL_EVALUATE, Job.Kind.MODEL_TRAIN),
                    ).exists()
                ),
                timeout=300,
                what="open training and evaluation jobs",
            )
        super().tearDown()

    @classmethod
    def tearDownClass(cls):
        if cls.embedded_worker:
            cls._worker.__exit__(None, None, None)
        super().tearDownClass()
        cls._settings.disable()
        shutil.rmtree(cls._tmp, ignore_errors=True)


def redis_flush(url: str = TEST_BROKER_URL) -> None:
    """Delete this test run's keys (and only those: other runs may share the database)."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{TEST_KEY_PREFIX}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def queue_length(queue: str, url: str = TEST_BROKER_URL) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.llen(TEST_KEY_PREFIX + queue))
    finally:
        client.close()


def queued_task_names(queue: str, url: str = TEST_BROKER_URL) -> list[str]:
    client = redis.Redis.from_url(url)
    try:
        raw_messages = client.lrange(TEST_KEY_PREFIX + queue, 0, -1)
        return [json.loads(raw)["headers"]["task"] for raw in raw_messages]
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# Workers


def _close_thread_connections(**kwargs: object) -> None:
    # The embedded worker runs tasks in its own thread: close that thread's database connection
    # after each task so that the test database can be flushed and dropped.
    connections.close_all()


@contextlib.contextmanager
def thread_worker(*, queues: tuple[str, ...] = (DEFAULT_QUEUE, ML_QUEUE)) -> Iterator[object]:
    """A real Celery worker (solo pool, like the `ml` worker) in a thread of this process."""
    from celery.contrib.testing.worker import start_worker

    task_postrun.connect(_close_thread_connections, weak=False)
    try:
        with start_worker(
            celery_app,
            pool="solo",
            concurrency=1,
            perform_ping_check=False,
            queues=list(queues),
            loglevel="WARNING",
            shutdown_timeout=60,
        ) as worker:
            yield worker
    finally:
        task_postrun.disconnect(_close_thread_connections)


def tests_database_url() -> str:
    """The URL of the database the tests are using right now (the test database)."""
    cfg = connection.settings_dict
    if cfg["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{cfg['NAME']}"
    user = cfg.get("USER") or "postgres"
    password = f":{cfg['PASSWORD']}" if cfg.get("PASSWORD") else ""
    host = cfg.get("HOST") or "127.0.0.1"
    port = cfg.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{cfg['NAME']}"


@contextlib.contextmanager
def subprocess_worker(
    *, name: str, extra_env: dict[str, str] | None = None, log_path: Path | None = None
) -> Iterator[subprocess.Popen]:
    """``celery worker`` in a subprocess on the test database and test Redis, like `make run`'s
    ML worker. Yields the process (kill it with ``worker_kill``); stopped at exit."""
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": tests_database_url(),
            "REDIS_URL": TEST_BROKER_URL,
            "FUNDUS_REDIS_KEY_PREFIX": TEST_KEY_PREFIX,
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "FUNDUS_FEATURE_STORE": str(settings.FUNDUS_FEATURE_STORE),
            "FUNDUS_MODEL_DIR": str(settings.FUNDUS_MODEL_DIR),
            "FUNDUS_WEIGHTS_DIR": str(settings.FUNDUS_WEIGHTS_DIR),
            "FUNDUS_BACKBONES": ",".join(settings.FUNDUS_BACKBONES),
            "FUNDUS_JOB_HEARTBEAT_SECONDS": str(settings.FUNDUS_JOB_HEARTBEAT_SECONDS),
            "FUNDUS_JOB_STALE_SECONDS": str(settings.FUNDUS_JOB_STALE_SECONDS),
            "CELERY_SKIP_CHECKS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra_env or {})
    log_path = log_path or Path(f"/tmp/funduscope-test-worker-{uuid.uuid4().hex[:8]}.log")
    command = [
        sys.executable, "-m", "celery", "-A", "grading", "worker",
        "-Q", f"{DEFAULT_QUEUE},{ML_QUEUE}", "-n", name, "--pool", "solo", "--concurrency", "1",
        "--without-heartbeat", "--without-mingle", "--without-gossip", "-l", "INFO",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        process.log_path = log_path  # type: ignore[attr-defined]
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def worker_log(process: subprocess.Popen) -> str:
    path: Path = process.log_path  # type: ignore[attr-defined]
    return path.read_text(errors="replace") if path.exists() else ""


# ---------------------------------------------------------------------------------------------
# Waiting and rows


def wait_until(
    condition: Callable[[], object], *, timeout: float, interval: float = 0.1, what: str = ""
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or condition}")
        time.sleep(interval)


def job_wait(
    job: Job,
    *,
    states: tuple[str, ...],
    timeout: float,
    on_poll: Callable[[Job], None] | None = None,
) -> Job:
    """Poll the job row until it reaches one of ``states``; ``on_poll`` sees every read."""

    def reached() -> Job | None:
        job.refresh_from_db()
        if on_poll is not None:
            on_poll(job)
        return job if job.state in states else None

    wait_until(reached, timeout=timeout, interval=0.05, what=f"job {job.pk} to be {states}")
    return job


def model_version_make(
    name: str,
    *,
    state: str = ModelVersion.State.CANDIDATE,
    artifact_dir: Path | None = None,
    holdout_sha256: list[str] | None = None,
    metrics: dict | None = None,
    **fields: object,
) -> ModelVersion:
    """A version row; with ``artifact_dir`` a folder (no real model) so it can be activated."""
    if artifact_dir is not None:
        artifact_dir.mkdir(parents=True, exist_ok=True)
        (artifact_dir / "metadata.json").write_text("{}")
    return ModelVersion.objects.create(
        name=name,
        state=state,
        artifact_path=str(artifact_dir) if artifact_dir else "",
        backbones=["mobilenet_v2"],
        class_values=[0, 1, 2, 3, 4],
        train_counts={"0": 10, "2": 5},
        holdout_sha256=holdout_sha256 or [],
        metrics=metrics or {},
        **fields,
    )


def confirmed_images_make(count: int = 20, *, patients: int = 10) -> list[Image]:
    """Tiny synthetic photographs with confirmed grades 0 and 2 (grade 2 has a bright lesion),
    ``count / patients`` images per patient, one grade per patient."""
    people = [patient_make() for _ in range(patients)]
    levels = {level.value: level for level in GradeLevel.objects.all()}
    images = []
    for index in range(count):
        grade = 2 if index % 2 else 0
        data = fundus_jpeg_bytes(seed=5000 + index, lesion=(64, 64) if grade else None, framed=True)
        images.append(
            image_create(
                validated=image_validate(data=data),
                patient=people[index % patients],
                confirmed_grade=levels[grade],
                import_source="import:test",
            )
        )
    return images
