"""Viewer renderings: every view rendered from one decode, images to be graded rendered in the
background by a real Celery worker on a real Redis right after they are stored, and nothing lost
or slowed when Redis is down."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.test import TransactionTestCase
from django.urls import reverse

from grading.models import Image
from grading.services import renderings
from grading.services.uploads import UploadVisit, upload_files_process
from tests.base import BaseTestCase, MediaMixin
from tests.factories import fundus_jpeg_bytes, image_make, user_make
from tests.factories_grading import MigrationDataKeptMixin
from tests.factories_jobs import DEAD_BROKER_URL, BrokerMixin, thread_worker, use_broker, wait_until


def cached_modes(image: Image) -> set[str]:
    return {
        mode
        for mode in renderings.VIEW_MODES
        if renderings.image_view_cache_path(image=image, mode=mode).is_file()
    }


class RenderAllTests(BaseTestCase):
    def test_it_renders_every_view_once_and_the_page_serves_them(self):
        image = image_make(confirmed_grade=1)
        self.assertEqual(cached_modes(image), set())
        self.assertEqual(renderings.image_views_render(image=image), list(renderings.VIEW_MODES))
        self.assertEqual(cached_modes(image), set(renderings.VIEW_MODES))
        self.assertEqual(renderings.image_views_render(image=image), [])  # all cached
        self.login(self.alice)
        response = self.client.get(reverse("image_view", args=[image.pk, "red_free"]))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Content-Type"], "image/png")

    def test_a_missing_photograph_is_a_clear_failure(self):
        image = image_make()
        Path(image.file.path).unlink()
        with self.assertRaisesMessage(renderings.RenderingFailed, "missing from storage"):
            renderings.image_views_render(image=image)


class RenderOnCreateTests(BaseTestCase):
    def test_an_image_to_grade_queues_its_rendering_on_commit(self):
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            image_make()
        self.assertEqual(len(callbacks), 1)

    def test_an_imported_confirmed_image_does_not(self):
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            image_make(confirmed_grade=2)
        self.assertEqual(callbacks, [])


class RedisDownTests(MigrationDataKeptMixin, MediaMixin, TransactionTestCase):
    def test_uploads_are_stored_and_do_not_wait_for_redis(self):
        renderings._queue_down_since = None
        self.addCleanup(setattr, renderings, "_queue_down_since", None)
        with use_broker(DEAD_BROKER_URL):
            started = time.perf_counter()
            images = [image_make(seed=300 + index) for index in range(10)]
            elapsed = time.perf_counter() - started
        self.assertEqual(Image.objects.count(), 10)
        # One failed PING (0.5 s timeout), then the back-off skips the others; a Celery send
        # would have waited ~20 s in its reconnect loop for the first image alone.
        self.assertLess(elapsed, 8, f"10 uploads took {elapsed:.1f} s with Redis down")
        self.assertEqual(cached_modes(images[0]), set())  # rendered on first request instead


@pytest.mark.slow
class BackgroundRenderTests(MigrationDataKeptMixin, MediaMixin, BrokerMixin, TransactionTestCase):
    def test_an_upload_has_its_views_rendered_by_the_worker(self):
        alice = user_make("alice", "clinician")

        class Upload:
            def __init__(self, name: str, data: bytes):
                import io

                self.name, self.size, self._io = name, len(data), io.BytesIO(data)

            def read(self, size: int = -1) -> bytes:
                return self._io.read(size)

            def seek(self, offset: int, whence: int = 0) -> int:
                return self._io.seek(offset, whence)

        with thread_worker(queues=("default",)):
            report = upload_files_process(
                files=[Upload("raw.jpg", fundus_jpeg_bytes(size=900, seed=41))],
                visit=UploadVisit(patient_pseudonym="P-RENDER"),
                uploaded_by=alice,
            )
            image = Image.objects.get(pk=report.accepted_ids[0])
            wait_until(
                lambda: cached_modes(image) == set(renderings.VIEW_MODES),
                timeout=60,
                interval=0.1,
                what="the views of the upload to be rendered",
            )
