"""``permission_required`` that says which permission was missing, so the 403 page can name the
role the page needs (Django's own raises a bare PermissionDenied)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps
from typing import Concatenate, ParamSpec, TypeVar

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.http.response import HttpResponseBase

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


_Request = TypeVar("_Request", bound=HttpRequest)
_Params = ParamSpec("_Params")
_Response = TypeVar("_Response", bound=HttpResponseBase)


def permission_required(
    perm: str | Iterable[str], *, raise_exception: bool = True
) -> Callable[
    [Callable[Concatenate[_Request, _Params], _Response]],
    Callable[Concatenate[_Request, _Params], _Response],
]:
    """Like Django's, for logged-in users (LoginRequiredMiddleware sends everyone else to the login
    page first); ``raise_exception`` is accepted for drop-in compatibility: it always raises."""
    permissions = (perm,) if isinstance(perm, str) else tuple(perm)

    def decorator(
        view: Callable[Concatenate[_Request, _Params], _Response],
    ) -> Callable[Concatenate[_Request, _Params], _Response]:
        @wraps(view)
        def checked(request: _Request, *args: _Params.args, **kwargs: _Params.kwargs) -> _Response:
            if not request.user.has_perms(permissions):
                raise PermissionRequired(permissions)
            return view(request, *args, **kwargs)

        return checked

    return decorator
