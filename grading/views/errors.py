"""Error pages in the product's layout (403 names the role the page needs, 404 where to go), the
static 500 page, and the favicon."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import Group
from django.http import Http404, HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.http.response import HttpResponseBase
from django.template import loader
from django.templatetags.static import static
from django.urls import path
from django.views.decorators.http import require_GET

from grading.views.access import PermissionRequired


def roles_with(*, permissions: tuple[str, ...]) -> list[str]:
    """Names of the roles (groups) that hold every one of ``permissions``."""
    groups = Group.objects.all()
    for permission in permissions:
        app_label, _, codename = permission.partition(".")
        groups = groups.filter(
            permissions__content_type__app_label=app_label, permissions__codename=codename
        )
    return sorted(set(groups.values_list("name", flat=True)))


class ProductPage(HttpResponse):
    """An error page in the product's layout, which ``ProductNotFoundPageMiddleware`` passes on."""


def _product_page(
    request: HttpRequest, template: str, ctx: Mapping[str, object], *, status: int
) -> ProductPage:
    return ProductPage(loader.render_to_string(template, ctx, request), status=status)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    needed = (
        roles_with(permissions=exception.permissions)
        if isinstance(exception, PermissionRequired)
        else []
    )
    user = request.user
    ctx = {
        "needed_roles": needed,
        "my_roles": list(user.groups.values_list("name", flat=True))
        if user.is_authenticated
        else [],
    }
    return _product_page(request, "403.html", ctx, status=403)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _product_page(request, "404.html", {"request_path": request.path}, status=404)


class ProductNotFoundPageMiddleware:
    """With DEBUG on (``make run``), Django answers an unknown URL with its technical 404 page,
    which lists every URL pattern. Users reach development installations too: give them the
    product's 404 page instead. JSON answers (the API) and our own pages pass untouched."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if (
            settings.DEBUG
            and response.status_code == 404
            and not isinstance(response, ProductPage)
            and response.get("Content-Type", "").startswith("text/html")
        ):
            return page_not_found(request, Http404())
        return response


@login_not_required
@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    # Browsers ask for /favicon.ico whatever the page's <link rel=icon> says.
    return HttpResponsePermanentRedirect(static("favicon.svg"))


urlpatterns = [path("favicon.ico", favicon, name="favicon")]
