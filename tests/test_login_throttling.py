"""Login throttling (django-axes): 5 failures in 15 minutes lock the account and, separately, the
client address for 15 minutes, with a clear message; the right password does not get through a
lock."""

from __future__ import annotations

import datetime as dt

from axes.models import AccessAttempt
from django.urls import reverse

from tests.base import PASSWORD, BaseTestCase

LOGIN_URL = reverse("login")


class LoginThrottlingTests(BaseTestCase):
    def _login(self, username: str, password: str, address: str = "10.0.0.1"):
        return self.client.post(
            LOGIN_URL, {"username": username, "password": password}, REMOTE_ADDR=address
        )

    def test_the_right_password_logs_in(self):
        response = self._login("alice", PASSWORD)
        self.assertRedirects(response, reverse("home"), fetch_redirect_response=False)

    def test_five_wrong_passwords_lock_the_account_even_for_the_right_one(self):
        for _ in range(4):
            self.assertContains(self._login("alice", "wrong"), "didn't match")
        # The fifth failure locks at once.
        self.assertEqual(self._login("alice", "wrong").status_code, 429)
        response = self._login("alice", PASSWORD)
        self.assertEqual(response.status_code, 429)
        self.assertContains(response, "Too many failed logins", status_code=429)
        self.assertContains(response, "0:15:00", status_code=429)
        self.assertNotIn("_auth_user_id", self.client.session)

    def test_the_account_lock_holds_from_another_address(self):
        for number in range(5):
            self._login("alice", "wrong", address=f"10.0.1.{number}")
        self.assertEqual(self._login("alice", PASSWORD, address="10.9.9.9").status_code, 429)

    def test_one_address_trying_many_accounts_is_locked(self):
        for name in ("u1", "u2", "u3", "u4", "u5"):
            self._login(name, "wrong", address="10.0.0.66")
        self.assertEqual(self._login("bob", PASSWORD, address="10.0.0.66").status_code, 429)
        # Bob himself, from his own computer, is not locked out.
        response = self._login("bob", PASSWORD, address="10.0.0.7")
        self.assertEqual(response.status_code, 302)

    def test_the_lock_ends_after_fifteen_minutes(self):
        for _ in range(5):
            self._login("alice", "wrong")
        AccessAttempt.objects.update(
            attempt_time=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=16)
        )
        self.assertEqual(self._login("alice", PASSWORD).status_code, 302)

    def test_four_failures_then_success_clear_the_count(self):
        for _ in range(4):
            self._login("alice", "wrong")
        self.assertEqual(self._login("alice", PASSWORD).status_code, 302)
        self.client.logout()
        for _ in range(4):
            self._login("alice", "wrong")
        self.assertEqual(self._login("alice", PASSWORD).status_code, 302)
