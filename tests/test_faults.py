"""Faults, injected for real, then the same checks each time: no half-written file or row, every
acknowledged grade present, a job that could not run visible as failed and retryable.

- the web process (a real ``runserver`` subprocess) is killed with SIGKILL in the middle of
  receiving an upload;
- PostgreSQL is restarted while a clinician grades (only when the tests run on PostgreSQL on a
  server this machine can restart: ``FUNDUS_TEST_PG_RESTART`` names the command);
- a Redis server of the test's own (never the shared one) stops while a retrain is requested.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import TransactionTestCase, override_settings
from django.urls import reverse

from grading.models import Grade, Image, Job, Patient
from grading.services import jobs as job_services
from grading.services import model_versions as version_services
from grading.services.uploads import uploads_leftovers_remove
from tests.base import MediaMixin
from tests.factories import fundus_jpeg_bytes, image_make, user_make
from tests.factories_grading import MigrationDataKeptMixin, workbench_set
from tests.factories_jobs import (
    REPO_ROOT,
    confirmed_images_make,
    use_broker,
    wait_until,
)
from tests.factories_jobs import (
    tests_database_url as database_url_of_tests,
)

# Ports of this project's fault tests (web server, private Redis).
FAULT_PORTS = range(8340, 8360)
CSRF_SECRET = "f" * 32  # a CSRF cookie of our own; the form sends the same secret
PG_RESTART = os.environ.get(
    "FUNDUS_TEST_PG_RESTART",
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main restart",
)


def free_port() -> int:
    for port in FAULT_PORTS:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port for the fault tests")


@contextlib.contextmanager
def web_server(
    *, media: Path, staging: Path, upload_tmp: Path
) -> Iterator[tuple[int, subprocess.Popen]]:
    """``manage.py runserver`` (no reloader: one process, the one to kill) on the test
    database."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url_of_tests(),
            "MEDIA_ROOT": str(media),
            "FUNDUS_UPLOAD_STAGING_DIR": str(staging),
            "FILE_UPLOAD_TEMP_DIR": str(upload_tmp),
            "PYTHONUNBUFFERED": "1",
        }
    )
    log_path = Path(tempfile.gettempdir()) / f"funduscope-fault-web-{uuid.uuid4().hex[:8]}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: _get(port, "/healthz").startswith(b"HTTP/1.1 200"),
                timeout=60,
                interval=0.3,
                what="the web server to answer",
            )
            process.log_path = log_path  # type: ignore[attr-defined]
            yield port, process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


def _get(port: int, path: str) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            return sock.recv(65536)
    except OSError:
        return b""


def multipart_upload(*, boundary: str, patient: str) -> tuple[bytes, bytes]:
    """(head, tail) of an upload body, the photograph's bytes between them."""
    fields = {"csrfmiddlewaretoken": CSRF_SECRET, "patient_id": patient, "eye": "R"}
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head, f"\r\n--{boundary}--\r\n".encode()


def request_head(*, port: int, session: str, boundary: str, length: int) -> bytes:
    return (
        f"POST /upload/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Cookie: sessionid={session}; csrftoken={CSRF_SECRET}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


class WebProcessKilledDuringUploadTests(MediaMixin, MigrationDataKeptMixin, TransactionTestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="funduscope-fault-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.media, self.staging, self.upload_tmp = (
            self.tmp / "media",
            self.tmp / "staging",
            self.tmp / "upload-tmp",
        )
        for folder in (self.media, self.staging, self.upload_tmp):
            folder.mkdir()
        alice = user_make("alice", "clinician")
        self.client.force_login(alice)
        self.session = self.client.cookies[settings.SESSION_COOKIE_NAME].value

    def _files_under(self, folder: Path) -> list[Path]:
        return [path for path in folder.rglob("*") if path.is_file()]

    def test_killing_the_web_process_mid_upload_leaves_no_row_and_no_file(self):
        photo = fundus_jpeg_bytes(size=512, seed=11)
        # A 12 MB file part: more than FILE_UPLOAD_MAX_MEMORY_SIZE, so Django streams it to a
        # temporary file, which is what a killed process would leave half-written.
        padding = b"\0" * (12 * 1024 * 1024)
        boundary = "faultboundary"
        head, tail = multipart_upload(boundary=boundary, patient="P-KILLED")
        total = len(head) + len(photo) + len(padding) + len(tail)
        server_started = web_server(
            media=self.media, staging=self.staging, upload_tmp=self.upload_tmp
        )
        with (
            server_started as (port, server),
            socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        ):
            sock.sendall(
                request_head(port=port, session=self.session, boundary=boundary, length=total)
            )
            sock.sendall(head + photo + padding[: 8 * 1024 * 1024])
            # Wait until the server is writing the upload to its temporary file, then kill it.
            wait_until(lambda: self._files_under(self.upload_tmp), timeout=30, what="a temp file")
            time.sleep(0.3)
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
        # Nothing of the interrupted upload reached the database or the photograph store.
        self.assertFalse(Image.objects.exists())
        self.assertFalse(Patient.objects.filter(pseudonym="P-KILLED").exists())
        self.assertEqual(self._files_under(self.media), [])
        self.assertEqual(self._files_under(self.staging), [])
        # The half-received temporary file is the only trace; housekeeping removes it.
        leftovers = self._files_under(self.upload_tmp)
        with override_settings(
            FILE_UPLOAD_TEMP_DIR=str(self.upload_tmp), FUNDUS_UPLOAD_STAGING_DIR=self.staging
        ):
            self.assertEqual(uploads_leftovers_remove(older_than_seconds=0), len(leftovers))
        self.assertEqual(self._files_under(self.upload_tmp), [])

        # A new web process takes the same upload, whole this time.
        with web_server(media=self.media, staging=self.staging, upload_tmp=self.upload_tmp) as (
            port,
            _server,
        ):
            head, tail = multipart_upload(boundary=boundary, patient="P-KILLED")
            body = head + photo + tail
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(
                    request_head(
                        port=port, session=self.session, boundary=boundary, length=len(body)
                    )
                    + body
                )
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
        # POST/redirect/GET: the upload answers with a redirect to its report page.
        self.assertTrue(answer.startswith(b"HTTP/1.1 302"), answer[:300])
        self.assertIn(b"Location: /upload/", answer)
        self.assertEqual(Image.objects.filter(patient__pseudonym="P-KILLED").count(), 1)
        self.assertEqual(len(self._files_under(self.media)), 1)


def _on_postgresql() -> bool:
    return connection.vendor == "postgresql"


@pytest.mark.slow
class PostgresRestartTests(MediaMixin, MigrationDataKeptMixin, TransactionTestCase):
    """Restarts the real PostgreSQL server once (a few seconds), only when the tests run on it."""

    def setUp(self):
        if not _on_postgresql():
            self.skipTest("PostgreSQL restart: the tests run on SQLite")
        if not shutil.which("pg_ctlcluster") and "FUNDUS_TEST_PG_RESTART" not in os.environ:
            self.skipTest("PostgreSQL restart: no pg_ctlcluster here (set FUNDUS_TEST_PG_RESTART)")

    def test_grading_survives_a_database_restart_without_restarting_the_app(self):
        workbench_set(grades_required=1)
        alice = user_make("alice", "clinician")
        images = [image_make() for _ in range(40)]
        self.client.force_login(alice)
        self.client.raise_request_exception = False
        restart = threading.Thread(
            target=subprocess.run,
            args=(PG_RESTART,),
            kwargs={"shell": True, "check": False, "capture_output": True},
        )
        acknowledged: list[int] = []
        failed = 0
        for index, image in enumerate(images):
            if index == 5:
                restart.start()
            response = self.client.post(reverse("grade_image", args=[image.pk]), {"grade": "2"})
            if response.status_code == 302:
                acknowledged.append(image.pk)
            else:
                failed += 1
                time.sleep(0.5)  # a clinician retries a little later
        restart.join(timeout=120)
        # The app recovers by itself: the same client (same process, same settings) grades on.
        wait_until(
            lambda: self.client.get(reverse("worklist")).status_code == 200,
            timeout=60,
            interval=0.5,
            what="the app to answer again",
        )
        late = image_make()
        response = self.client.post(reverse("grade_image", args=[late.pk]), {"grade": "1"})
        self.assertEqual(response.status_code, 302)
        acknowledged.append(late.pk)
        # Every acknowledged grade is stored, and every stored grade left its image consistent.
        stored = set(Grade.objects.values_list("image_id", flat=True))
        self.assertLessEqual(set(acknowledged), stored)
        for image in Image.objects.filter(pk__in=stored):
            self.assertEqual(image.grading_state, Image.GradingState.CONFIRMED)
        for image in Image.objects.exclude(pk__in=stored):
            self.assertEqual(image.grading_state, Image.GradingState.PENDING)
        self.assertGreaterEqual(len(acknowledged), 30, f"{failed} requests failed")
        print(  # the figures for the fault report (pytest -s)
            f"\nPostgreSQL restart: {len(acknowledged)} grades acknowledged and stored, "
            f"{failed} requests refused during the restart, {len(stored)} grades in the database"
        )


@contextlib.contextmanager
def private_redis() -> Iterator[tuple[str, subprocess.Popen]]:
    """A Redis server of this test alone (the shared one is never stopped)."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    with use_broker(url):
        wait_until(
            lambda: job_services.queue_is_available(timeout=0.3),
            timeout=20,
            what="the private Redis",
        )
        try:
            yield url, process
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
class RedisStopsDuringRetrainTests(MediaMixin, MigrationDataKeptMixin, TransactionTestCase):
    def setUp(self):
        self.adam = user_make("adam", "admin")
        confirmed_images_make()

    def test_redis_stopping_between_the_request_and_the_send_fails_the_job_visibly(self):
        with private_redis() as (url, redis_process):
            # The request passes the queue check and writes its job; Redis stops before the
            # message is sent (at commit).
            with transaction.atomic():
                job, created = version_services.model_retrain_request(user=self.adam)
                self.assertTrue(created)
                redis_process.terminate()
                redis_process.wait(timeout=10)
            job.refresh_from_db()
            self.assertEqual(job.state, Job.State.FAILED)
            self.assertIn("queue", job.error.lower())
            # A new request while Redis is down is refused with a message and writes nothing.
            self.client.force_login(self.adam)
            response = self.client.post(reverse("model_retrain"), follow=True)
            self.assertContains(response, "Retraining was not started")
            self.assertEqual(Job.objects.filter(kind=Job.Kind.MODEL_TRAIN).count(), 1)
            # Nothing waits half-done: no open job blocks the next request.
            self.assertFalse(Job.objects.filter(state__in=job_services.OPEN_STATES).exists())

        # Redis is back: the failed job is retried from the jobs page and queued.
        with private_redis():
            response = self.client.post(reverse("job_retry", args=[job.pk]), follow=True)
            self.assertContains(response, "queued again as job")
            retried = Job.objects.exclude(pk=job.pk).get(kind=Job.Kind.MODEL_TRAIN)
            self.assertEqual(retried.state, Job.State.QUEUED)
