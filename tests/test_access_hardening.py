"""Access: the model-versions API is a reviewer's view, sessions end when idle, every user can
change their password, X-Forwarded-Proto is trusted only behind a declared proxy. Headers: CSP
without inline script, Permissions-Policy, no-store on clinical pages and API answers. Logs: a 403
is one line with user and path."""

from __future__ import annotations

import logging
import time

from django.test import override_settings
from django.urls import reverse

from grading.middleware import SESSION_LAST_SEEN
from tests.base import PASSWORD
from tests.factories import image_make
from tests.factories_grading import GradingTestCase
from tests.test_settings import PRODUCTION, run_django


class AccessTests(GradingTestCase):
    def test_clinicians_get_403_from_the_model_versions_api(self):
        self.assertStatusByUser(reverse("api_model_versions"), alice=403, rita=200, adam=200)

    @override_settings(FUNDUS_SESSION_IDLE_MINUTES=30)
    def test_an_idle_session_is_logged_out(self):
        self.login(self.alice)
        self.assertEqual(self.client.get(reverse("worklist")).status_code, 200)
        session = self.client.session
        session[SESSION_LAST_SEEN] = int(time.time()) - 31 * 60
        session.save()
        response = self.client.get(reverse("worklist"))
        self.assertRedirects(
            response,
            f"{reverse('login')}?next={reverse('worklist')}",
            fetch_redirect_response=False,
        )
        self.assertNotIn("_auth_user_id", self.client.session)

    @override_settings(FUNDUS_SESSION_IDLE_MINUTES=30)
    def test_an_active_session_stays(self):
        self.login(self.alice)
        self.client.get(reverse("worklist"))
        session = self.client.session
        session[SESSION_LAST_SEEN] = int(time.time()) - 29 * 60
        session.save()
        self.assertEqual(self.client.get(reverse("worklist")).status_code, 200)

    def test_a_clinician_changes_their_password(self):
        self.login(self.alice)
        page = self.client.get(reverse("password_change"))
        self.assertContains(page, "Change your password")
        response = self.client.post(
            reverse("password_change"),
            {
                "old_password": PASSWORD,
                "new_password1": "a-new-fundus-pass-2026",
                "new_password2": "a-new-fundus-pass-2026",
            },
        )
        self.assertRedirects(response, reverse("password_change_done"))
        self.alice.refresh_from_db()
        self.assertTrue(self.alice.check_password("a-new-fundus-pass-2026"))


def _setting(name: str, **env: str) -> str:
    result = run_django(
        ["shell", "-c", f"from django.conf import settings; print(settings.{name})"], **env
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_x_forwarded_proto_is_trusted_only_behind_a_declared_proxy():
    assert _setting("SECURE_PROXY_SSL_HEADER", **PRODUCTION) == "None"
    behind = _setting("SECURE_PROXY_SSL_HEADER", **PRODUCTION, FUNDUS_BEHIND_PROXY="true")
    assert behind == "('HTTP_X_FORWARDED_PROTO', 'https')"


class HeaderTests(GradingTestCase):
    def test_pages_carry_csp_permissions_policy_and_no_store(self):
        image = image_make()
        self.login(self.alice)
        for url in (reverse("worklist"), reverse("grade_image", args=[image.pk])):
            response = self.client.get(url)
            with self.subTest(url=url):
                csp = response["Content-Security-Policy"]
                self.assertIn("script-src 'self'", csp)
                self.assertNotIn("unsafe-inline' ; script", csp)
                self.assertIn("frame-ancestors 'none'", csp)
                self.assertIn("camera=()", response["Permissions-Policy"])
                self.assertIn("no-store", response["Cache-Control"])
                # No inline script or handler for the CSP to block.
                html = response.content.decode()
                self.assertNotIn("<script>", html)
                self.assertNotRegex(html, r"\son(change|click|submit|load)=")

    def test_api_answers_are_not_stored(self):
        self.login(self.rita)
        response = self.client.get(reverse("api_images"))
        self.assertIn("no-store", response["Cache-Control"])


class ForbiddenLogTests(GradingTestCase):
    def test_a_403_is_logged_as_one_line_with_user_and_path(self):
        self.login(self.alice)
        with self.assertLogs("django.request", level="WARNING") as logs:
            self.assertEqual(self.client.get(reverse("review")).status_code, 403)
        self.assertEqual(len(logs.records), 1)
        record = logs.records[0]
        self.assertIsNone(record.exc_info)
        message = record.getMessage()
        self.assertIn("user=alice", message)
        self.assertIn("/review/", message)
        self.assertNotIn("\n", logging.Formatter().format(record))
