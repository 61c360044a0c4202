"""Finding one's way: the navigation, the admin home and the settings index lead to every page
a role uses (issue 21)."""

from __future__ import annotations

from django.urls import reverse

from grading.models import Image
from tests.factories import image_make
from tests.factories_grading import GradingTestCase

QUALITY_LINK = f'href="{reverse("quality_queue")}">Check quality</a>'
CERTIFICATION_LINK = f'href="{reverse("certification")}">Certification</a>'
ADMIN_SITE_LINK = f'href="{reverse("admin:index")}">Admin site</a>'


class NavigationTests(GradingTestCase):
    def nav(self, user) -> str:
        self.login(user)
        html = self.client.get(reverse("home")).content.decode()
        return html.split('<nav aria-label="Main">', 1)[1].split("</nav>", 1)[0]

    def test_clinicians_find_the_quality_queue_and_their_certification(self):
        nav = self.nav(self.alice)
        self.assertIn(QUALITY_LINK, nav)
        self.assertIn(CERTIFICATION_LINK, nav)
        self.assertNotIn(ADMIN_SITE_LINK, nav)

    def test_admins_find_both_and_the_admin_site_when_staff(self):
        self.assertIn(CERTIFICATION_LINK, self.nav(self.adam))
        self.adam.is_staff = True
        self.adam.save()
        self.assertIn(ADMIN_SITE_LINK, self.nav(self.adam))

    def test_reviewers_do_not_get_the_graders_quality_queue(self):
        nav = self.nav(self.rita)
        self.assertNotIn(QUALITY_LINK, nav)
        self.assertIn(CERTIFICATION_LINK, nav)

    def test_the_settings_entry_is_the_settings_index(self):
        self.assertIn(f'href="{reverse("settings_index")}">Settings</a>', self.nav(self.adam))


class AdminHomeTests(GradingTestCase):
    def test_the_admin_home_announces_photos_waiting_for_a_quality_check(self):
        image_make()
        Image.objects.update(quality_review=Image.QualityReview.CHECK)
        self.login(self.adam)
        response = self.client.get(reverse("home"))
        self.assertContains(response, "1 photograph waiting for a quality check")
        self.assertContains(response, reverse("quality_queue"))
        self.assertContains(response, reverse("certification"))


class SettingsIndexTests(GradingTestCase):
    def test_settings_is_an_index_of_the_settings_pages_for_admins_only(self):
        url = reverse("settings_index")
        self.assertEqual(url, "/settings/")
        self.assertStatusByUser(url, adam=200, alice=403, rita=403)
        self.login(self.adam)
        response = self.client.get(url)
        self.assertContains(response, reverse("workbench_settings"))
        self.assertContains(response, reverse("protocol_settings"))


class QualityQueueThumbnailTests(GradingTestCase):
    def test_a_photo_cell_is_never_blank_while_its_thumbnail_renders(self):
        image = image_make()
        Image.objects.update(quality_review=Image.QualityReview.CHECK)
        self.login(self.alice)
        response = self.client.get(reverse("quality_queue"))
        self.assertContains(response, "data-thumb-placeholder")
        self.assertContains(response, f"#{image.pk}<br>loading…")
        self.assertContains(response, 'width="96" height="96"')
