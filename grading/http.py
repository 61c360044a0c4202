"""Request types for annotations: what a view behind login may rely on (as healthchecks does).

Nothing here exists at run time beyond the classes themselves; Django builds plain ``HttpRequest``
objects, and the middleware in ``settings.MIDDLEWARE`` adds what these types promise.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails
from rest_framework.request import Request


class HtmxHttpRequest(HttpRequest):
    """Any request: ``HtmxMiddleware`` sets ``htmx`` on every one."""

    htmx: HtmxDetails


class AuthenticatedHttpRequest(HtmxHttpRequest):
    """A request to a view behind login: ``LoginRequiredMiddleware`` sends anonymous visitors to
    the login page first (unless the view is ``login_not_required``), so ``user`` is a saved user."""

    user: User


class AuthenticatedRequest(Request):
    """A request to an API view that requires ``IsAuthenticated``: ``user`` is a saved user."""

    user: User


# Photographs, their views and activation maps are patient data: never kept in a browser's cache
# (a shared workstation's next user could open them from it) nor in a proxy. The browser asks
# again for each; the views themselves are cached on the server (services/renderings).
PATIENT_IMAGE_CACHE_CONTROL = "private, no-store"
