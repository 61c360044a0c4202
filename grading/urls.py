"""URL map. Each area's view module carries its own ``urlpatterns`` so areas stay independent."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from grading.views import errors

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path(
        "accounts/password/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
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
    path("api/", include("grading.views.api")),
    path("favicon.ico", errors.favicon, name="favicon"),
]

handler403 = "grading.views.errors.permission_denied"
handler404 = "grading.views.errors.page_not_found"
# handler500 stays Django's: it renders templates/500.html without a context (no database, no
# user), which is what a page shown after an unexpected error should depend on.
