from __future__ import annotations

from django.apps import AppConfig


class GradingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "grading"
    verbose_name = "Funduscope grading"

    def ready(self) -> None:
        from grading.services.audit import audit_registry_setup

        audit_registry_setup()
        # After a failed request, a dead database connection is closed at once (see the
        # receiver); the review cache's receivers renew it when grades or predictions change.
        from django.core.signals import got_request_exception

        from grading.middleware import close_broken_database_connections
        from grading.selectors import review_cache  # noqa: F401

        got_request_exception.connect(
            close_broken_database_connections, dispatch_uid="close_broken_database_connections"
        )
