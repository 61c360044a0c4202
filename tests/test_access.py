"""Every page needs a login, and roles decide what a logged-in user may do."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, get_resolver

from tests.base import BaseTestCase

# Probes need no login: /readyz tells only which checks pass; /metrics is closed by its token
# setting instead (tests/test_operations.py).
PUBLIC_NAMES = {"login", "healthz", "favicon", "readyz", "metrics"}


def concrete_paths() -> list[tuple[str, str]]:
    """(name, path) of every URL of the product, with 1 for each integer argument."""
    found: list[tuple[str, str]] = []

    def walk(patterns, prefix: str) -> None:
        for entry in patterns:
            route = str(entry.pattern)
            if isinstance(entry, URLResolver):
                if route.startswith("admin/"):
                    continue  # the Django admin has its own staff login
                walk(entry.url_patterns, prefix + route)
            elif isinstance(entry, URLPattern):
                path = prefix + route
                for converter in ("<int:", "<str:", "<slug:", "<uuid:"):
                    while converter in path:
                        start = path.index(converter)
                        end = path.index(">", start)
                        value = "1" if converter == "<int:" else "x"
                        path = path[:start] + value + path[end + 1 :]
                if "(?P<" in path or "^" in path:
                    continue
                found.append((entry.name or path, "/" + path))

    walk(get_resolver().url_patterns, "")
    return found


class LoginRequiredTests(BaseTestCase):
    def test_every_page_requires_login(self):
        paths = [(name, path) for name, path in concrete_paths() if name not in PUBLIC_NAMES]
        self.assertGreater(len(paths), 2)
        for name, path in paths:
            with self.subTest(name=name, path=path):
                response = self.client.get(path)
                if path.startswith("/api/"):
                    self.assertIn(response.status_code, (401, 403))
                else:
                    self.assertEqual(response.status_code, 302, path)
                    self.assertTrue(response["Location"].startswith("/accounts/login/"), path)

    def test_the_login_page_and_health_check_are_public(self):
        self.assertEqual(self.client.get("/accounts/login/").status_code, 200)
        self.assertEqual(self.client.get("/healthz").status_code, 200)

    def test_logging_in_reaches_the_home_page(self):
        response = self.client.post(
            "/accounts/login/", {"username": "alice", "password": "secret-pass-123"}, follow=True
        )
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "alice")


class RoleTests(BaseTestCase):
    def test_roles_carry_their_permissions(self):
        self.assertTrue(self.alice.has_perm("grading.grade_image"))
        self.assertFalse(self.alice.has_perm("grading.adjudicate_image"))
        self.assertFalse(self.alice.has_perm("grading.retrain_model"))
        self.assertTrue(self.rita.has_perm("grading.adjudicate_image"))
        self.assertTrue(self.rita.has_perm("grading.review_agreement"))
        self.assertFalse(self.rita.has_perm("grading.grade_image"))
        self.assertFalse(self.rita.has_perm("grading.retrain_model"))
        for perm in (
            "retrain_model",
            "activate_model",
            "manage_jobs",
            "grade_image",
            "adjudicate_image",
        ):
            self.assertTrue(self.adam.has_perm(f"grading.{perm}"), perm)
        self.assertFalse(self.nora.has_perm("grading.view_image"))

    def test_image_files_are_served_only_after_login(self):
        from tests.factories import image_make

        image = image_make()
        self.assertEqual(self.client.get(f"/images/{image.pk}/file").status_code, 302)
        self.login(self.alice)
        response = self.client.get(f"/images/{image.pk}/file")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Content-Type"], "image/jpeg")
        self.assertEqual(b"".join(response.streaming_content)[:2], b"\xff\xd8")
        self.login(self.nora)  # an account without a role sees no clinical data
        self.assertEqual(self.client.get(f"/images/{image.pk}/file").status_code, 403)
