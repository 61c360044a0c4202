from __future__ import annotations

import shutil
import tempfile

from django.test import TestCase, override_settings

from tests.factories import user_make

PASSWORD = "secret-pass-123"


class MediaMixin:
    """Each test class writes photographs to its own temporary MEDIA_ROOT."""

    @classmethod
    def setUpClass(cls):
        cls._media_dir = tempfile.mkdtemp(prefix="funduscope-media-")
        cls._media_override = override_settings(MEDIA_ROOT=cls._media_dir)
        cls._media_override.enable()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls._media_override.disable()
        shutil.rmtree(cls._media_dir, ignore_errors=True)


class BaseTestCase(MediaMixin, TestCase):
    """Named users, one per role: alice and bob grade, rita reviews, adam administers,
    and nora has an account but no role."""

    @classmethod
    def setUpTestData(cls):
        cls.alice = user_make("alice", "clinician")
        cls.bob = user_make("bob", "clinician")
        cls.rita = user_make("rita", "reviewer")
        cls.adam = user_make("adam", "admin")
        cls.nora = user_make("nora", None)

    def login(self, user) -> None:
        self.client.force_login(user)
