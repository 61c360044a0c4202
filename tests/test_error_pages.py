"""Error pages in the product's layout: 403 names the role, 404 (also with DEBUG on) says where to
go, 500 is a self-contained page, and the favicon is served."""

from __future__ import annotations

from django.test import RequestFactory, override_settings
from django.urls import reverse
from django.views.defaults import server_error

from tests.base import BaseTestCase


class ForbiddenPageTests(BaseTestCase):
    def test_it_names_the_role_the_page_needs_and_where_to_go(self):
        self.login(self.alice)
        response = self.client.get(reverse("review"))
        self.assertEqual(response.status_code, 403)
        self.assertContains(
            response,
            "needs the <strong>admin</strong> or <strong>reviewer</strong> role",
            status_code=403,
        )
        self.assertContains(
            response, "signed in as <strong>alice</strong> (clinician)", status_code=403
        )
        self.assertContains(response, f'href="{reverse("worklist")}"', status_code=403)
        self.assertContains(response, 'class="topbar"', status_code=403)  # the product's layout

    def test_an_admin_only_page_names_the_admin_role(self):
        self.login(self.rita)
        response = self.client.get(reverse("model_versions"))
        self.assertContains(response, "needs the <strong>admin</strong> role", status_code=403)
        self.assertContains(response, f'href="{reverse("adjudication_queue")}"', status_code=403)
        self.assertNotContains(response, f'href="{reverse("worklist")}"', status_code=403)

    def test_an_account_without_a_role_is_told_so(self):
        self.login(self.nora)
        response = self.client.get(reverse("worklist"))
        self.assertContains(response, "with no role yet", status_code=403)


class NotFoundPageTests(BaseTestCase):
    def test_it_renders_in_the_layout_with_links(self):
        self.login(self.alice)
        response = self.client.get("/no-such-page/")
        self.assertContains(response, "This page does not exist", status_code=404)
        self.assertContains(response, "/no-such-page/", status_code=404)
        self.assertContains(response, f'href="{reverse("worklist")}"', status_code=404)

    @override_settings(DEBUG=True)
    def test_debug_mode_never_shows_the_url_list(self):
        self.login(self.alice)
        for path in ("/no-such-page/", reverse("grade_image", args=[999999])):
            with self.subTest(path=path):
                response = self.client.get(path)
                self.assertContains(response, "This page does not exist", status_code=404)
                self.assertNotContains(response, "URLconf", status_code=404)
                self.assertNotContains(response, "accounts/login/", status_code=404)

    @override_settings(DEBUG=True)
    def test_the_api_keeps_its_json_404(self):
        self.login(self.rita)
        response = self.client.get("/api/images/999999/")
        self.assertEqual(response.status_code, 404)
        self.assertEqual(response["Content-Type"], "application/json")


class ServerErrorPageTests(BaseTestCase):
    def test_it_is_a_self_contained_page(self):
        response = server_error(RequestFactory().get("/"))
        self.assertEqual(response.status_code, 500)
        html = response.content.decode()
        self.assertIn("Something went wrong on our side", html)
        self.assertIn("<style>", html)
        self.assertNotIn("{%", html)


class FaviconTests(BaseTestCase):
    def test_it_is_served_without_login_and_linked_from_every_page(self):
        response = self.client.get("/favicon.ico")
        self.assertEqual(response.status_code, 301)
        self.assertEqual(response["Location"], "/static/favicon.svg")
        self.login(self.alice)
        self.assertContains(self.client.get(reverse("worklist")), 'rel="icon"')
