"""URL map. Each area's view module carries its own ``urlpatterns`` so areas stay independent."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("grading.views.core")),
    path("", include("grading.views.grading")),
    path("", include("grading.views.models")),
    path("", include("grading.views.review")),
    path("", include("grading.views.protocol")),
    path("api/", include("grading.views.api")),
]
