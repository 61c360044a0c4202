"""Operations endpoints: /healthz, /readyz (503 when Redis or the ML worker is away), /metrics
behind its token, and the request id carried from a request into the task it enqueued."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from unittest import skipUnless

import redis
from django.core.cache import cache
from django.test import TransactionTestCase, override_settings
from django.urls import reverse

from grading.models import Grade, Image
from grading.request_log import REQUEST_ID_HEADER, request_id_var
from grading.services.worker_heartbeat import worker_heartbeat_write
from grading.tasks import jobs_housekeeping
from tests.base import BaseTestCase, MediaMixin
from tests.factories import image_make, user_make
from tests.factories_grading import (
    MigrationDataKeptMixin,
    grade_give,
    model_version_active_make,
    prediction_make,
)
from tests.factories_jobs import (
    DEAD_BROKER_URL,
    ML_QUEUE,
    REPO_ROOT,
    TEST_BROKER_URL,
    TEST_KEY_PREFIX,
    BrokerMixin,
    redis_flush,
    tests_database_url,
    thread_worker,
    use_broker,
    wait_until,
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pings(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False
    finally:
        client.close()


CHECKS = {"Database", "Redis", "Storage", "FeatureStore", "MlWorkerHeartbeat"}


class ReadinessTests(BrokerMixin, BaseTestCase):
    def setUp(self):
        redis_flush()
        store = tempfile.mkdtemp(prefix="funduscope-features-")
        self.enterContext(override_settings(FUNDUS_FEATURE_STORE=store))

    def readyz(self) -> tuple[int, dict]:
        response = self.client.get(reverse("readyz"))
        self.assertEqual(response["Content-Type"], "application/json")
        return response.status_code, response.json()

    def test_it_answers_liveness_without_login_or_database(self):
        with self.assertNumQueries(0):
            response = self.client.get(reverse("healthz"))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"status": "ok"})

    def test_it_is_ready_with_one_status_per_check_and_no_login(self):
        worker_heartbeat_write(queue="ml")
        status, body = self.readyz()
        self.assertEqual(status, 200, body)
        self.assertEqual(body["status"], "ok")
        self.assertEqual(set(body["checks"]), CHECKS)
        self.assertEqual(set(body["checks"].values()), {"ok"})

    def test_it_turns_503_when_redis_is_unreachable(self):
        worker_heartbeat_write(queue="ml")
        with use_broker(DEAD_BROKER_URL):
            status, body = self.readyz()
        self.assertEqual(status, 503)
        self.assertEqual(body["status"], "unavailable")
        self.assertIn("Unable to connect to Redis", body["checks"]["Redis"])
        self.assertEqual(body["checks"]["Database"], "ok")

    @skipUnless(shutil.which("redis-server"), "needs redis-server to start a private one")
    def test_it_turns_503_when_its_redis_server_stops(self):
        # A Redis server of this test's own (never the shared one), stopped halfway.
        port = _free_port()
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        self.addCleanup(server.kill)
        url = f"redis://127.0.0.1:{port}/0"
        with use_broker(url):
            wait_until(lambda: _pings(url), timeout=10, what="the private Redis server")
            worker_heartbeat_write(queue="ml")
            self.assertEqual(self.readyz()[0], 200)
            server.terminate()
            server.wait(timeout=10)
            status, body = self.readyz()
        self.assertEqual(status, 503)
        self.assertIn("Unable to connect to Redis", body["checks"]["Redis"])

    def test_it_turns_503_without_a_recent_ml_worker_heartbeat(self):
        status, body = self.readyz()
        self.assertEqual(status, 503)
        self.assertIn("No ML worker heartbeat", body["checks"]["MlWorkerHeartbeat"])
        self.assertEqual(body["checks"]["Redis"], "ok")
        worker_heartbeat_write(queue="ml", at=time.time() - 600)
        status, body = self.readyz()
        self.assertEqual(status, 503)
        self.assertIn("Last ML worker heartbeat 600 s ago", body["checks"]["MlWorkerHeartbeat"])

    def test_a_running_ml_worker_makes_it_ready(self):
        with (
            override_settings(FUNDUS_WORKER_HEARTBEAT_SECONDS=1),
            thread_worker(queues=(ML_QUEUE,)),
        ):
            wait_until(lambda: self.readyz()[0] == 200, timeout=20, what="a worker heartbeat")

    @override_settings(PRODUCTION=True, SECURE_SSL_REDIRECT=True, DEBUG=False)
    def test_probes_are_not_redirected_to_https_in_production(self):
        self.assertEqual(self.client.get(reverse("healthz")).status_code, 200)
        self.assertEqual(self.client.get(reverse("readyz")).status_code, 503)
        self.assertEqual(self.client.get(reverse("home")).status_code, 301)


class MetricsTests(BrokerMixin, BaseTestCase):
    def setUp(self):
        redis_flush()
        cache.clear()  # the drift report is cached by the predictions' count and last id

    def scrape(self, **headers) -> str:
        response = self.client.get(reverse("metrics"), **headers)
        self.assertEqual(response.status_code, 200)
        return response.content.decode()

    @override_settings(PRODUCTION=True, FUNDUS_METRICS_TOKEN="")
    def test_it_is_closed_in_production_without_a_token(self):
        self.assertEqual(self.client.get(reverse("metrics")).status_code, 404)
        self.login(self.adam)
        self.assertEqual(self.client.get(reverse("metrics")).status_code, 404)

    @override_settings(PRODUCTION=True, FUNDUS_METRICS_TOKEN="s3cret-token-for-metrics")
    def test_it_needs_the_token(self):
        wrong = self.client.get(reverse("metrics"), HTTP_AUTHORIZATION="Bearer nope")
        self.assertEqual(wrong.status_code, 404)
        body = self.scrape(HTTP_AUTHORIZATION="Bearer s3cret-token-for-metrics")
        self.assertIn("fundus_celery_queue_depth", body)

    def test_it_exports_our_figures_and_request_latency_by_view(self):
        self.client.get(reverse("healthz"))
        images = [image_make(), image_make(), image_make(confirmed_grade=2)]
        version = model_version_active_make("v-metrics")
        for image, grade in zip(images, (0, 2, 2), strict=True):
            probabilities = [0.05] * 5
            probabilities[grade] = 0.8
            prediction_make(image=image, version=version, probabilities=probabilities)
        grade_give(images[0], self.alice, 1)
        jobs_housekeeping.apply_async(queue="default")  # one message waiting, no worker
        body = self.scrape()
        self.assertIn(
            'django_http_requests_latency_seconds_by_view_method_count{method="GET",view="healthz"}',
            body,
        )
        self.assertIn('fundus_celery_queue_depth{queue="default"} 1.0', body)
        self.assertIn('fundus_celery_queue_depth{queue="ml"} 0.0', body)
        self.assertIn(f"fundus_grades_saved_total {Grade.objects.count()}.0", body)
        self.assertIn(f"fundus_grades_saved_last_hour {Grade.objects.count()}.0", body)
        pending = Image.objects.filter(grading_state=Image.GradingState.PENDING).count()
        self.assertEqual(pending, 1)
        self.assertIn('fundus_images{state="pending"} 1.0', body)
        self.assertIn('fundus_images{state="confirmed"} 2.0', body)
        self.assertIn('fundus_active_model_version{version="v-metrics"} 1.0', body)
        self.assertIn('fundus_predictions{grade="2",in_training="false"} 2.0', body)
        self.assertIn('fundus_predictions{grade="0",in_training="false"} 1.0', body)
        self.assertIn("fundus_job_duration_seconds_count", body)
        self.assertIn("fundus_drift_alert 0.0", body)


class RequestIdTests(MigrationDataKeptMixin, BrokerMixin, MediaMixin, TransactionTestCase):
    def test_the_request_id_travels_into_the_task_the_request_enqueued(self):
        redis_flush()
        self.client.force_login(user_make("adam", "admin"))
        response = self.client.post(
            reverse("job_start"),
            {"kind": "features_extract"},
            HTTP_X_REQUEST_ID="req-0123456789abcdef",
        )
        self.assertEqual(response["X-Request-ID"], "req-0123456789abcdef")
        client = redis.Redis.from_url(TEST_BROKER_URL)
        try:
            raw = client.lrange(TEST_KEY_PREFIX + ML_QUEUE, 0, -1)
        finally:
            client.close()
        self.assertEqual(len(raw), 1)
        headers = json.loads(raw[0])["headers"]
        self.assertEqual(headers[REQUEST_ID_HEADER], "req-0123456789abcdef")

    def test_the_worker_logs_job_events_with_the_request_id(self):
        redis_flush()
        token = request_id_var.set("req-job-events-42")
        try:
            jobs_housekeeping.apply_async(queue="default")
        finally:
            request_id_var.reset(token)
        with (
            self.assertLogs("grading.jobs", level=logging.INFO) as logs,
            thread_worker(queues=("default",)),
        ):
            wait_until(
                lambda: any("job finished" in r.getMessage() for r in logs.records),
                timeout=20,
                what="the job's finished event",
            )
        events = [(r.event, r.request_id, r.task) for r in logs.records]  # type: ignore[attr-defined]
        self.assertIn(("started", "req-job-events-42", "grading.tasks.jobs_housekeeping"), events)
        self.assertIn(("finished", "req-job-events-42", "grading.tasks.jobs_housekeeping"), events)


PROBE_SCRIPT = """
from django.test import Client
client = Client()
for path, headers in (("/healthz", {}), ("/readyz", {}), ("/metrics", {}),
                      ("/metrics", {"HTTP_AUTHORIZATION": "Bearer prod-metrics-token-0123"})):
    response = client.get(path, **headers)
    print("STATUS", path, response.status_code, response.content[:60])
"""


class ProductionSettingsTests(BaseTestCase):
    """The probes and the scrape under DJANGO_ENV=production, in a process of their own, whose
    log lines are JSON (FUNDUS_LOG_FORMAT=json)."""

    def test_probes_work_under_production_settings_with_json_request_logs(self):
        store = tempfile.mkdtemp(prefix="funduscope-features-")
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("DEBUG",)},
            "DJANGO_ENV": "production",
            "SECRET_KEY": "p" * 20 + "-production-secret-for-tests-only-0123456789",
            "ALLOWED_HOSTS": "testserver",
            "DATABASE_URL": tests_database_url(),
            "REDIS_URL": TEST_BROKER_URL,
            "FUNDUS_REDIS_KEY_PREFIX": TEST_KEY_PREFIX,
            "MEDIA_ROOT": tempfile.mkdtemp(prefix="funduscope-media-"),
            "FUNDUS_FEATURE_STORE": store,
            "FUNDUS_METRICS_TOKEN": "prod-metrics-token-0123",
            "FUNDUS_LOG_FORMAT": "json",
        }
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", PROBE_SCRIPT],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        statuses = [line.split()[1:3] for line in result.stdout.splitlines() if "STATUS" in line]
        self.assertEqual(
            statuses,
            [["/healthz", "200"], ["/readyz", "503"], ["/metrics", "404"], ["/metrics", "200"]],
            result.stdout,
        )
        lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
        requests = [line for line in lines if line.get("logger") == "grading.requests"]
        self.assertEqual(
            [r["path"] for r in requests], ["/healthz", "/readyz", "/metrics", "/metrics"]
        )
        first = requests[0]
        self.assertEqual((first["method"], first["status"], first["view"]), ("GET", 200, "healthz"))
        self.assertEqual(len(first["request_id"]), 32)
        self.assertIn("duration_ms", first)
        self.assertIn("level", first)
