"""URL map: the admin, then each area's view module, which carries its own ``urlpatterns``.

A page in an existing area is its view module's business alone: the view and its ``path()`` go in
that module's ``urlpatterns``, its template under ``templates/grading/``. Only a new area (a new
view module) adds a line here.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("grading.views.accounts")),
    path("admin/", admin.site.urls),
    path("", include("grading.views.core")),
    path("", include("grading.views.worklist")),
    path("", include("grading.views.grade")),
    path("", include("grading.views.adjudication")),
    path("", include("grading.views.upload")),
    path("", include("grading.views.patients")),
    path("", include("grading.views.images")),
    path("", include("grading.views.settings")),
    path("", include("grading.views.models")),
    path("", include("grading.views.review")),
    path("", include("grading.views.audit")),
    path("", include("grading.views.protocol")),
    path("", include("grading.views.drift")),
    path("", include("grading.views.operations")),
    path("api/", include("grading.views.api")),
    path("", include("grading.views.errors")),
]

handler403 = "grading.views.errors.permission_denied"
handler404 = "grading.views.errors.page_not_found"
# handler500 stays Django's: it renders templates/500.html without a context (no database, no
# user), which is what a page shown after an unexpected error should depend on.
