"""Logs and headers a browser reads: a refused request is logged once, as one line (every 403
was logged twice), and Permissions-Policy names only features browsers know (issue 21)."""

from __future__ import annotations

import io
import logging

from django.test import override_settings
from django.urls import reverse

from tests.factories_grading import GradingTestCase


def _stream_handlers(name: str) -> list[logging.StreamHandler]:
    """Every stream handler the configuration gives that a record of logger ``name`` reaches
    (pytest's capturing handlers, subclasses, are not the installation's)."""
    found: list[logging.StreamHandler] = []
    logger: logging.Logger | None = logging.getLogger(name)
    while logger is not None:
        found += [h for h in logger.handlers if type(h) is logging.StreamHandler]
        logger = logger.parent if logger.propagate else None
    return found


class ForbiddenLoggingTests(GradingTestCase):
    @override_settings(DEBUG=True)  # `make run`: Django's own console handler is live
    def test_a_403_is_logged_once_on_one_line(self):
        handlers = _stream_handlers("django.request")
        self.assertTrue(handlers)
        streams = [io.StringIO() for _ in handlers]
        previous = [
            handler.setStream(stream) for handler, stream in zip(handlers, streams, strict=True)
        ]
        try:
            self.login(self.alice)
            self.assertEqual(self.client.get(reverse("review")).status_code, 403)
        finally:
            for handler, stream in zip(handlers, previous, strict=True):
                handler.setStream(stream)
        lines = [line for s in streams for line in s.getvalue().splitlines() if "Forbidden" in line]
        self.assertEqual(
            lines, ["Forbidden: GET /review/ user=alice (This page needs a role you do not have.)"]
        )


# Policy-controlled features Chromium recognises (third_party/blink/renderer/core/permissions_policy/
# permissions_policy_features.json5; the ones a page could want to switch off).
CHROMIUM_FEATURES = {
    "accelerometer",
    "ambient-light-sensor",
    "autoplay",
    "camera",
    "display-capture",
    "encrypted-media",
    "fullscreen",
    "geolocation",
    "gyroscope",
    "hid",
    "magnetometer",
    "microphone",
    "midi",
    "payment",
    "picture-in-picture",
    "publickey-credentials-get",
    "screen-wake-lock",
    "serial",
    "sync-xhr",
    "usb",
    "web-share",
    "xr-spatial-tracking",
}


class PermissionsPolicyTests(GradingTestCase):
    def test_the_policy_lists_only_features_browsers_know(self):
        self.login(self.alice)
        header = self.client.get(reverse("home"))["Permissions-Policy"]
        features = {item.split("=")[0].strip() for item in header.split(",")}
        self.assertIn("camera", features)
        self.assertEqual(features - CHROMIUM_FEATURES, set())
