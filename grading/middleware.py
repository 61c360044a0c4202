"""Request-wide protections: security headers, the session idle timeout, and the product's own
answer when an upload exceeds Django's multipart limits."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render
from django.utils.cache import patch_cache_control

SESSION_LAST_SEEN = "fundus_last_seen"
# Writing the session on every request would cost a database write per page; a minute of
# resolution is plenty for an idle timeout counted in minutes.
LAST_SEEN_RESOLUTION_SECONDS = 60


class SecurityHeadersMiddleware:
    """Permissions-Policy on every response, and ``Cache-Control: no-store`` on every response
    that does not set its own caching: pages and API answers carry clinical data, which must not
    stay in a shared browser's cache or a proxy."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Permissions-Policy", settings.FUNDUS_PERMISSIONS_POLICY)
        if "Cache-Control" not in response.headers:
            patch_cache_control(response, no_store=True, private=True)
        return response


class SessionIdleTimeoutMiddleware:
    """Log out a session that made no request for FUNDUS_SESSION_IDLE_MINUTES."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            now = int(time.time())
            last_seen = request.session.get(SESSION_LAST_SEEN)
            idle_limit = settings.FUNDUS_SESSION_IDLE_MINUTES * 60
            if isinstance(last_seen, int) and now - last_seen > idle_limit:
                logout(request)
                messages.info(
                    request,
                    f"You were logged out after {settings.FUNDUS_SESSION_IDLE_MINUTES} minutes "
                    "without activity. Please log in again.",
                )
                return redirect_to_login(request.get_full_path())
            if not isinstance(last_seen, int) or now - last_seen >= LAST_SEEN_RESOLUTION_SECONDS:
                request.session[SESSION_LAST_SEEN] = now
        return self.get_response(request)


class UploadLimitsMiddleware:
    """Parse a multipart body up front so that going past Django's limits (too many files, too
    many fields, too large a body, a malformed body) gets a page that says which limit and how
    to proceed, instead of a bare "Bad Request (400)"."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and request.content_type == "multipart/form-data":
            try:
                request.POST  # noqa: B018 - parses the body and the files
                request.FILES  # noqa: B018
            except (
                TooManyFilesSent,
                TooManyFieldsSent,
                RequestDataTooBig,
                MultiPartParserError,
            ) as error:
                return self._refused(request, error)
        return self.get_response(request)

    def _refused(self, request: HttpRequest, error: Exception) -> HttpResponse:
        max_files = settings.DATA_UPLOAD_MAX_NUMBER_FILES
        max_mb = settings.DATA_UPLOAD_MAX_MEMORY_SIZE // (1024 * 1024)
        if isinstance(error, TooManyFilesSent):
            problem = f"More than {max_files} files were sent at once."
        elif isinstance(error, TooManyFieldsSent):
            problem = "The form sent too many fields."
        elif isinstance(error, RequestDataTooBig):
            problem = f"The form data is larger than {max_mb} MB."
        elif "header size" in str(error):
            # Django caps a file part's headers at 1,024 bytes, which only a very long file name
            # reaches.
            problem = (
                "A file name is too long: rename the file to at most "
                f"{settings.FUNDUS_MAX_FILENAME_LENGTH} characters."
            )
        else:
            problem = "The upload could not be read (it was interrupted or malformed)."
        ctx = {
            "problem": problem,
            "max_files": max_files,
            "max_file_mb": settings.FUNDUS_MAX_UPLOAD_BYTES // (1024 * 1024),
            "max_name_length": settings.FUNDUS_MAX_FILENAME_LENGTH,
        }
        return render(request, "grading/upload_refused.html", ctx, status=400)


def close_broken_database_connections(**kwargs: object) -> None:
    """After a request failed on a database error, close the connections that no longer work,
    so that the next request reconnects (after a PostgreSQL restart, say) instead of failing on
    the dead one. Django checks this when a request finishes; doing it as soon as the error
    happens also covers request cycles that skip that check (the test client does)."""
    for database in connections.all(initialized_only=True):
        if database.connection is not None and database.errors_occurred:
            database.close_if_unusable_or_obsolete()
