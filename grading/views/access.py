"""``permission_required`` that says which permission was missing, so the 403 page can name the
role the page needs (Django's own raises a bare PermissionDenied)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

GRADE_PERMISSION = "grading.grade_image"
ADJUDICATE_PERMISSION = "grading.adjudicate_image"
UPLOAD_PERMISSION = "grading.upload_image"
VIEW_IMAGE_PERMISSION = "grading.view_image"
VIEW_PATIENT_PERMISSION = "grading.view_patient"
SETTINGS_PERMISSION = "grading.change_workbenchsettings"


class PermissionRequired(PermissionDenied):
    def __init__(self, permissions: tuple[str, ...]):
        super().__init__("This page needs a role you do not have.")
        self.permissions = permissions


def permission_required(
    perm: str | Iterable[str], *, raise_exception: bool = True
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Like Django's, for logged-in users (LoginRequiredMiddleware sends everyone else to the login
    page first); ``raise_exception`` is accepted for drop-in compatibility: it always raises."""
    permissions = (perm,) if isinstance(perm, str) else tuple(perm)

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def checked(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.has_perms(permissions):
                raise PermissionRequired(permissions)
            return view(request, *args, **kwargs)

        return checked

    return decorator
