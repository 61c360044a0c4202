"""Authentication backend: Django's ModelBackend, with the permission set read in one query.

ModelBackend reads a user's own permissions and their groups' permissions in two queries on every
request that checks one; every page here checks several (the navigation shows what the roles
allow), so the pair is one query instead: the same set, cached on the user object for the request
as ModelBackend does.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AnonymousUser, Permission
from django.db.models import Model, Q


class RoleBackend(ModelBackend):
    def get_all_permissions(self, user_obj: Any, obj: Model | None = None) -> set[str]:
        if isinstance(user_obj, AnonymousUser) or not user_obj.is_active or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            permissions = Permission.objects.all()
            if not user_obj.is_superuser:
                permissions = permissions.filter(Q(user=user_obj) | Q(group__user=user_obj))
            rows = permissions.values_list("content_type__app_label", "codename").order_by()
            user_obj._perm_cache = {f"{app_label}.{codename}" for app_label, codename in rows}
        return user_obj._perm_cache
