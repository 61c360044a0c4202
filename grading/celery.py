"""The Celery app: Redis broker and result store, two queues (`default`, `ml`).

The `ml` worker runs with `--pool solo`: TensorFlow and forked pool workers deadlock together.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grading.settings")

app = Celery("grading")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
