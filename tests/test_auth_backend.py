"""The permission lookup reads one query per request and answers exactly as Django's
ModelBackend does, for every role, for permissions given to a user directly, for a superuser
and for an inactive user."""

from __future__ import annotations

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission, User

from grading.auth_backend import RoleBackend
from tests.base import BaseTestCase


def fresh(user: User) -> User:
    return User.objects.get(pk=user.pk)  # no permission cache carried over


class RoleBackendTests(BaseTestCase):
    def test_it_grants_what_model_backend_grants_for_every_role(self):
        direct = User.objects.create_user("dora", password="secret-pass-123")
        direct.user_permissions.add(Permission.objects.get(codename="export_data"))
        boss = User.objects.create_superuser("sue", password="secret-pass-123")
        sleeper = User.objects.create_user("ivan", password="secret-pass-123", is_active=False)
        for user in (self.alice, self.bob, self.rita, self.adam, self.nora, direct, boss, sleeper):
            with self.subTest(user=user.username):
                expected = ModelBackend().get_all_permissions(fresh(user))
                self.assertEqual(RoleBackend().get_all_permissions(fresh(user)), expected)
        self.assertIn("grading.export_data", RoleBackend().get_all_permissions(fresh(direct)))
        self.assertEqual(RoleBackend().get_all_permissions(fresh(sleeper)), set())

    def test_it_reads_the_permissions_in_one_query_and_keeps_them_for_the_request(self):
        user = fresh(self.alice)
        with self.assertNumQueries(1):
            self.assertTrue(user.has_perm("grading.grade_image"))
            self.assertFalse(user.has_perm("grading.retrain_model"))
            self.assertTrue(user.has_perms(["grading.grade_image"]))
