from __future__ import annotations

# Load the Celery app with Django so that @shared_task uses it and `transaction.on_commit` enqueues.
from grading.celery import app as celery_app

__all__ = ["celery_app"]
