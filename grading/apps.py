from __future__ import annotations

from django.apps import AppConfig


class GradingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "grading"
    verbose_name = "Funduscope grading"

    def ready(self) -> None:
        # Connects the receivers that renew the review cache when grades or predictions change.
        from grading.selectors import review_cache  # noqa: F401
